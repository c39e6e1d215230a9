"""A stand-in VNC server for tests that need no QEMU: it speaks the RFB banner, then echoes
what it receives (or, with close_after_banner, hangs up at once)."""
import socket
import threading


class StubVNC:
    BANNER = b"RFB 003.008\n"

    def __init__(self, close_after_banner: bool = False):
        self.close_after_banner = close_after_banner
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(self.BANNER)
            if self.close_after_banner:
                return
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.listener.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
