"""Import a kernel module made from edited source. Triton's JIT reads a kernel's source from its
file, so a probe's edited copy of a kernel (stamps, prefetches) must be written to one first."""
import importlib.util, os, tempfile


def import_source(name: str, text: str):
    """The module `name` whose source is `text`, written to a fresh temp dir and imported."""
    path = os.path.join(tempfile.mkdtemp(), f"{name}.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
