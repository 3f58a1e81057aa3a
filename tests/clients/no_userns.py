"""Runs a command as uid 65534 inside a user namespace whose limit on new user namespaces
(user.max_user_namespaces) is 0, as on a machine where the kernel forbids them: for the test that
`run --isolate` then exits 2 and runs nothing. Needs root (CI is root).

usage: no_userns.py PROGRAM ARGS...
"""
import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if libc.unshare(CLONE_NEWUSER) != 0:
            sys.exit("unshare: errno %d" % ctypes.get_errno())
        os.write(ready_w, b"x")
        os.read(go_r, 1)
        os.setgid(0)
        os.setuid(0)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        os.execvp("setpriv", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + sys.argv[1:])
    os.read(ready_r, 1)
    # The parent (root outside) maps root and nobody into the child's namespace.
    for name in ("uid_map", "gid_map"):
        with open("/proc/%d/%s" % (pid, name), "w") as f:
            f.write("0 0 1\n65534 65534 1\n")
    os.write(go_w, b"x")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
