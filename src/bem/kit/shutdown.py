"""Stopping ``bem serve --workers N`` without leaving new clients hanging.

uvicorn's supervisor keeps its copy of the listening socket open while its workers drain
on SIGTERM: the workers stop accepting, but the kernel still completes new connections
into the backlog, where they wait for the whole drain (measured: 2 s and more, up to
``BEM_SHUTDOWN_TIMEOUT``). This supervisor closes its copy before it signals the workers,
so once they have closed theirs a new connection is refused at once and a load balancer
moves on, while in-flight requests finish.
"""

from __future__ import annotations

from uvicorn.supervisors import Multiprocess


class Supervisor(Multiprocess):
    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()
