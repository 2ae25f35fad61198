"""What fastrnn raises and how its CLI fails: the helpers every error-message test shares."""
import pytest


def outcome(fn):
    """(exception type, message) of fn(), or ('ok', None)."""
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return "ok", None


def usage_error(capsys, command, *argv):
    """The error of `python -m fastrnn COMMAND ARGV`, which must fail the way argparse does: exit 2,
    the usage line, then one `error:` line, no traceback, nothing on stdout. Returns that line's message."""
    from fastrnn.__main__ import main
    with pytest.raises(SystemExit) as exit_info:
        main([command, *argv])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing started: not even a header
    assert "Traceback" not in err
    assert err.startswith(f"usage: python -m fastrnn {command}")
    lines = err.rstrip("\n").splitlines()
    assert [line for line in lines if "error:" in line] == lines[-1:]
    prefix = f"python -m fastrnn {command}: error: "
    assert lines[-1].startswith(prefix), lines[-1]
    return lines[-1][len(prefix):]
