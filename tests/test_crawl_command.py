"""crawl/command.py: run_command with real processes; no mocks but one failing Popen.

Process-group checks read /proc, so those tests are Linux-only.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from crawlsched.crawl import command
from crawlsched.crawl.command import run_command


def env_with(**extra):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def test_command_success_appends_to_its_log(tmp_path):
    log = tmp_path / "logs" / "run.log"
    out = run_command("sh -c 'echo first; echo done'", log, env=env_with())
    assert out.ok and out.exit_code == 0 and out.message == "done" and out.output == str(log)
    run_command("echo again", log, env=env_with())
    assert log.read_text() == "first\ndone\nagain\n"


def test_command_failure_reports_its_last_line(tmp_path):
    out = run_command("sh -c 'echo one; echo last words >&2; echo; exit 3'", tmp_path / "r.log", env=env_with())
    assert not out.ok and not out.permanent and out.exit_code == 3 and out.message == "last words"


def test_command_without_output_reports_exit_code(tmp_path):
    out = run_command("sh -c 'exit 4'", tmp_path / "r.log", env=env_with())
    assert out.message == "exit code 4"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_timeout_kills_the_whole_group_even_what_ignores_sigterm(tmp_path):
    log = tmp_path / "r.log"
    start = time.monotonic()
    # The trap makes sh and both sleeps ignore SIGTERM (ignored signals are inherited);
    # the first sleep is a backgrounded grandchild.
    out = run_command("""sh -c 'trap "" TERM; sleep 100 & echo "$$ $!"; sleep 100'""", log,
                      env=env_with(), timeout=1, kill_after=1)
    assert time.monotonic() - start < 8
    assert not out.ok and out.message == "timed out after 1s" and out.exit_code == -9
    leader, grandchild = map(int, log.read_text().split()[:2])
    time.sleep(0.1)
    assert not alive(grandchild) and not alive(leader)
    assert group_members(leader) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_timeout_needs_no_sigkill_when_sigterm_is_enough(tmp_path):
    log = tmp_path / "r.log"
    start = time.monotonic()
    out = run_command("""sh -c 'sleep 100 & echo "$$"; sleep 100'""", log, env=env_with(), timeout=0.5,
                      kill_after=30)
    assert time.monotonic() - start < 5
    assert out.exit_code == -15 and "timed out" in out.message
    assert group_members(int(log.read_text().split()[0])) == []


def test_cancel_stops_a_command(tmp_path):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    out = run_command("sleep 100", tmp_path / "r.log", env=env_with(), cancel=cancel)
    assert out.interrupted and not out.ok


def test_command_not_found_is_permanent(tmp_path):
    out = run_command("no-such-command-xyz --flag", tmp_path / "r.log", env=env_with())
    assert not out.ok and out.permanent and out.message == "command not found: no-such-command-xyz"


def test_command_gets_exactly_the_env_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAWLSCHED_LEAK", "leaked")
    out = run_command("""sh -c 'echo "$CRAWLSCHED_JOB_ID/$CRAWLSCHED_LEAK/"'""", tmp_path / "r.log",
                      env=env_with(CRAWLSCHED_JOB_ID="news"))
    assert out.message == "news//"


def test_command_is_never_given_to_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    out = run_command("echo $HOME; rm -rf x", tmp_path / "r.log", env=env_with(HOME="/home/h"))
    assert out.ok and out.message == "$HOME; rm -rf x"
    assert (tmp_path / "x").is_dir()


def test_unparsable_command_is_permanent(tmp_path):
    out = run_command("echo 'unclosed", tmp_path / "r.log", env=env_with())
    assert out.permanent and "does not parse" in out.message



def test_ctrl_c_while_waiting_stops_the_commands_group(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"

    def boom(proc, timeout, cancel):
        while not pidfile.exists() or not pidfile.read_text().strip():
            time.sleep(0.02)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_wait", boom)
    with pytest.raises(KeyboardInterrupt):
        run_command(f"sh -c 'echo $$ > {pidfile}; exec sleep 60'", tmp_path / "log", env=dict(os.environ),
                    timeout=60, kill_after=2)
    assert group_members(int(pidfile.read_text())) == []



def test_enoexec_at_spawn_is_permanent(tmp_path):
    script = tmp_path / "garbage"
    script.write_bytes(b"\x7fELF not really\n")
    script.chmod(0o755)
    out = run_command(str(script), tmp_path / "log", env=dict(os.environ))
    assert not out.ok and out.permanent, out


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOMEM])
def test_resource_errors_at_spawn_are_retryable(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(subprocess, "Popen", refuse)
    out = run_command("true", tmp_path / "log", env=dict(os.environ))
    assert not out.ok and not out.permanent and os.strerror(code) in out.message


def test_a_prepared_command_runs_nothing_until_its_go_ahead(tmp_path):
    marker = tmp_path / "ran"
    held = command.prepare_command(f"touch {marker}", tmp_path / "run.log", env=env_with())
    assert isinstance(held, command.Prepared)
    time.sleep(0.3)
    assert not marker.exists() and alive(held.pgid)  # spawned, held at its gate
    assert held.ident is not None and held.pgid in group_members(held.pgid)
    held.go()
    outcome = held.run(timeout=10)
    assert outcome.ok and outcome.exit_code == 0 and marker.exists()


def test_an_abandoned_prepared_command_never_runs_and_leaves_no_log(tmp_path):
    marker = tmp_path / "ran"
    held = command.prepare_command(f"touch {marker}", tmp_path / "logs" / "run.log", env=env_with())
    assert isinstance(held, command.Prepared)
    pgid = held.pgid
    held.abandon()
    assert not marker.exists() and not alive(pgid)
    assert not (tmp_path / "logs" / "run.log").exists()
    held.go()  # too late: a no-op, it is gone
    assert not marker.exists()


def test_a_prepared_command_whose_parent_dies_never_runs(tmp_path):
    # The worker holding the gate is SIGKILLed before its go-ahead: the pipe's end closes, the gate exits.
    marker = tmp_path / "ran"
    code = ("import sys, time; from pathlib import Path; from crawlsched.crawl import command;"
            f"h = command.prepare_command('touch {marker}', Path({str(tmp_path / 'run.log')!r}), env={env_with()!r});"
            "print(h.pgid, flush=True); time.sleep(60)")
    holder = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pgid = int(holder.stdout.readline())
    holder.kill()
    holder.wait()
    deadline = time.monotonic() + 5
    while alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pgid) and not marker.exists()


def test_a_command_that_cannot_start_is_said_so_when_prepared(tmp_path):
    outcome = command.prepare_command("no-such-program-here", tmp_path / "run.log", env=env_with())
    assert isinstance(outcome, command.Outcome) and outcome.permanent
    assert outcome.message == "command not found: no-such-program-here"


# --- a shared gate: the commands due at one instant let go by one write ---------------------------


def _held_at(gate, tmp_path, n: int) -> list:
    held = [command.prepare_command(f"touch {tmp_path}/ran{i}", tmp_path / f"run{i}.log", env=env_with(), gate=gate)
            for i in range(n)]
    assert all(isinstance(h, command.Prepared) and h.shared is gate for h in held)
    return held


def test_commands_held_at_a_shared_gate_run_nothing_until_one_write_lets_them_all_go(tmp_path):
    gate = command.SharedGate()
    held = _held_at(gate, tmp_path, 5)
    time.sleep(0.3)
    assert not list(tmp_path.glob("ran*")) and all(alive(h.pgid) for h in held)
    went = gate.open_all(held)
    assert [h.went_at for h in held] == [went] * 5 and all(h.released for h in held)
    assert all(h.run(timeout=10).ok for h in held) and len(list(tmp_path.glob("ran*"))) == 5


def test_one_abandoned_at_a_shared_gate_is_killed_there_and_the_others_still_go(tmp_path):
    gate = command.SharedGate()
    kept, dropped = _held_at(gate, tmp_path, 2)
    dropped.abandon()
    assert not alive(dropped.pgid)
    gate.open_all([kept])
    assert kept.run(timeout=10).ok
    assert (tmp_path / "ran0").exists() and not (tmp_path / "ran1").exists()


def test_a_shared_gate_closed_unwritten_runs_none_of_its_commands(tmp_path):
    gate = command.SharedGate()
    held = _held_at(gate, tmp_path, 3)
    gate.close()
    for h in held:
        h.released = True  # (its gate exits on its own: nothing to let go)
        assert h.proc.wait(timeout=5) == 111
    assert not list(tmp_path.glob("ran*"))


def test_a_command_spawned_at_a_sealed_gate_gets_a_gate_of_its_own(tmp_path):
    gate = command.SharedGate()
    gate.seal()
    [late] = [command.prepare_command(f"touch {tmp_path}/late", tmp_path / "late.log", env=env_with(), gate=gate)]
    assert late.shared is None and gate.spawned == []
    late.go()
    assert late.run(timeout=10).ok and (tmp_path / "late").exists()


def test_a_command_at_a_shared_gate_cannot_be_let_go_alone(tmp_path):
    gate = command.SharedGate()
    [held] = _held_at(gate, tmp_path, 1)
    with pytest.raises(RuntimeError):
        held.go()  # its line could reach another command's gate
    held.abandon()
