#!/usr/bin/env python3
"""A job-control shell in miniature, for tests: runs ARGV as the foreground job of a new
terminal (a pty) and watches it the way bash does, with waitpid(WUNTRACED | WCONTINUED).

    fgshell.py REPORT OUT ERR -- ARGV...

This process becomes a session leader with the pty as its controlling terminal; the job gets a
process group of its own, made the terminal's foreground group (tcsetpgrp), stdin on the pty,
stdout to OUT, stderr to ERR. Every stop waitpid reports is written down with its time (and
the job is continued, so the test ends and can say so). REPORT gets {"agent_pid"} as soon as
the job runs (REPORT.pid) and, at its end, {"agent_pid", "stops", "rc", "t_end"}; rc is the
exit code, or -N for a death by signal N."""
import fcntl
import json
import os
import signal
import sys
import termios
import time


def main():
    report, out, err = sys.argv[1:4]
    assert sys.argv[4] == "--"
    argv = sys.argv[5:]
    os.setsid()
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)   # tcsetpgrp from the background
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(slave, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        o = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        e = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(slave, 0)
        os.dup2(o, 1)
        os.dup2(e, 2)
        for fd in (master, slave, o, e):
            os.close(fd)
        os.execvp(argv[0], argv)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass   # it did so itself (and may have exec'd)
    try:
        os.tcsetpgrp(slave, pid)
    except OSError:
        pass
    with open(report + ".pid.tmp", "w") as f:
        json.dump({"agent_pid": pid}, f)
    os.rename(report + ".pid.tmp", report + ".pid")
    stops = []
    while True:
        try:
            _, st = os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)
        except InterruptedError:
            continue
        if os.WIFSTOPPED(st):
            stops.append({"t": time.time(), "sig": os.WSTOPSIG(st)})
            os.kill(pid, signal.SIGCONT)
            continue
        if os.WIFCONTINUED(st):
            continue
        rc = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -os.WTERMSIG(st)
        break
    with open(report + ".tmp", "w") as f:
        json.dump({"agent_pid": pid, "stops": stops, "rc": rc, "t_end": time.time()}, f)
    os.rename(report + ".tmp", report)


if __name__ == "__main__":
    main()
