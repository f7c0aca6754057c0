"""Inside a container image: `python3 hpc_sft_exec.py INDEX MODULE CMD...` runs CMD with CMD[INDEX] replaced by the
file of MODULE as installed in the image (the host's path to that script means nothing there). Finds the file
without importing the packages on the way (instructlab.training's __init__ imports torch). Standard library only;
the worker shim's sitecustomize has already run here, so shielded signals stay ignored across the exec."""
import importlib.machinery
import importlib.util
import os
import sys


def module_file(name: str) -> str:
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            break
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        sys.stderr.write(f"hpc-sft: {name} is not installed in this image ({sys.executable}); install hpc-sft and "
                         "the training backend in the image (docs/containers.md)\n")
        sys.exit(127)
    return spec.origin


def main(argv: list) -> None:
    index, module, command = int(argv[0]), argv[1], list(argv[2:])
    command[index] = module_file(module)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
