#!/usr/bin/env python3
"""The pipeline test's HTTP server: serves ROOT, plus two faults.

  fixture_server.py ROOT PORT_FILE

  /status/500/...     answers 500 Internal Server Error
  /truncated/PATH     announces PATH's full length, sends half of it and
                      closes the connection
  /slow/PATH          serves PATH after 5 seconds

Listens on 127.0.0.1 on a free port, written to PORT_FILE once it listens.
"""
import functools
import http.server
import os
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/status/500/"):
            self.send_error(500, "fault injected by the test")
        elif self.path.startswith("/truncated/"):
            path = self.translate_path(self.path[len("/truncated"):])
            with open(path, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/slow/"):
            time.sleep(5)
            self.path = self.path[len("/slow"):]
            super().do_GET()
        else:
            super().do_GET()

    def log_message(self, format, *args):
        sys.stderr.write("fixture server: " + format % args + "\n")


def main():
    root, port_file = sys.argv[1], sys.argv[2]
    handler = functools.partial(Handler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
