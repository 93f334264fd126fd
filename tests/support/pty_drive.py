"""Drives a program on a real pseudo-terminal, answering prompts (lango's interactive tests).

Reads one JSON request on stdin:
  {"argv": [...], "env": {...}, "steps": [{"expect": "text", "send": "line"}], "timeout": 60}
Each step waits until `expect` has appeared on the terminal since the previous step, then types
`send` and Enter. Writes one JSON object: {"exit": code, "terminal": "...", "stdout": "..."}
where `terminal` is what appeared on the pty and `stdout` what the program wrote to its real
stdout (a pipe, so prompts can be shown not to land there).
"""
import json
import os
import pty
import select
import sys
import termios
import time


def main():
    req = json.load(sys.stdin)
    out_r, out_w = os.pipe()
    pid, fd = pty.fork()
    if pid == 0:
        os.dup2(out_w, 1)
        os.close(out_r)
        env = dict(os.environ)
        env.update(req.get("env", {}))
        os.execvpe(req["argv"][0], req["argv"], env)
    os.close(out_w)
    deadline = time.time() + req.get("timeout", 60)
    terminal = b""
    stdout = b""
    seen = 0
    steps = list(req.get("steps", []))
    alive = True
    while alive and time.time() < deadline:
        r, _, _ = select.select([fd, out_r], [], [], 0.1)
        for f in r:
            try:
                data = os.read(f, 4096)
            except OSError:
                data = b""
            if f == fd:
                if not data:
                    alive = False
                terminal += data
            else:
                stdout += data
        if steps and steps[0]["expect"].encode() in terminal[seen:]:
            seen = terminal.index(steps[0]["expect"].encode(), seen) + len(steps[0]["expect"])
            # A hidden prompt switches echo off right after printing itself; type only then,
            # as a person would, so nothing typed is echoed by the kernel (wait at most 2 s).
            until = time.time() + 2
            while time.time() < until:
                try:
                    if not termios.tcgetattr(fd)[3] & termios.ECHO:
                        break
                except termios.error:
                    break
                time.sleep(0.01)
            os.write(fd, steps[0]["send"].encode() + b"\n")
            steps.pop(0)
    try:
        while True:
            data = os.read(out_r, 4096)
            if not data:
                break
            stdout += data
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    json.dump({"exit": code, "terminal": terminal.decode(errors="replace"),
               "stdout": stdout.decode(errors="replace"), "unanswered": [s["expect"] for s in steps]},
              sys.stdout)


if __name__ == "__main__":
    main()
