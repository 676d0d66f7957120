"""Stand-ins for pgpool in the netns tests, shared so that every test fakes it the same way.

A stand-in is a small Python program run as postgres with `python3 -c`: its process
is named "pgpool" (PR_SET_NAME, before any thread starts, so /proc/<pid>/stat shows
it), it writes its pid file atomically, and it answers every SSLRequest on its unix
socket with "N", as pgpool without SSL does. It prints "ready" once it serves.
"""

import textwrap

# argv: pid_file unix_path [seconds]; without seconds it serves until killed. A socket
# left by a killed predecessor is removed first.
ANSWERING_PGPOOL = textwrap.dedent(
    """
    import ctypes, os, socket, sys, threading
    ctypes.CDLL(None).prctl(15, b"pgpool", 0, 0, 0)
    pid_file, unix_path = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else None
    try:
        os.unlink(unix_path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(unix_path)
    server.listen(64)
    def serve():
        while True:
            conn, _ = server.accept()
            conn.settimeout(2)
            try:
                if len(conn.recv(8)) == 8:
                    conn.sendall(b"N")
            except OSError:
                pass
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\\n")
    os.rename(pid_file + ".tmp", pid_file)
    print("ready", flush=True)
    threading.Event().wait(seconds)
    """
)
