"""python -m lab {run,list,report,check}: see `python -m lab --help`."""
from lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
