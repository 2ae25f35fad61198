"""`python -m fastrnn {bench,check,inspect,sweep,tune}`."""
import argparse
import importlib
import sys

# subcommand -> module with add_arguments(parser) and main(args) -> exit status
COMMANDS = {
    "bench": ("fastrnn.bench", "time fastrnn against torch.nn on this machine"),
    "check": ("fastrnn.check", "verify every available backend against the float64 reference"),
    "inspect": ("fastrnn.inspection", "compile every kernel configuration for sm_80/sm_90 and report resources"),
    "sweep": ("fastrnn.sweep", "re-derive kernels/config.py's TUNED table (launch settings that do not spill)"),
    "tune": ("fastrnn.tune", "decide backend='auto' for the benchmark registry's cases on this GPU ahead of time"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m fastrnn")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if argv and argv[0] == name:  # import only the command that runs (each pulls in its own deps)
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).main(args)


if __name__ == "__main__":
    sys.exit(main())
