"""One serving process of ``cloudfilm serve --processes N``, started by :mod:`viewer_api.supervisor`
with the listening sockets it bound (as file descriptors), a pipe to say it is ready on, and a pipe
whose end of file says the supervisor is gone."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

from pacs import logs
from pacs.malloc import limit_arenas

log = logging.getLogger("cloudfilm.serve")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cloudfilm-serve-process")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--http-fd", type=int, required=True)
    parser.add_argument("--dicom-fd", type=int)
    parser.add_argument("--dicom-tls-fd", type=int)
    parser.add_argument("--board-fd", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    return parser.parse_args(argv)


def _adopt(fd: int | None) -> socket.socket | None:
    """The listening socket behind ``fd``, kept from this process's own children (plugin runners,
    DCMTK tools): a socket they inherited would keep the port open after this process ends."""
    if fd is None:
        return None
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def _watch_lifeline(fd: int) -> None:
    """Exit at once when the supervisor is gone (killed): no process serves the ports unsupervised."""
    os.set_inheritable(fd, False)

    def wait() -> None:
        while os.read(fd, 1):
            pass
        log.error("the supervisor is gone; this process stops now")
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=wait, name="lifeline", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    import typer

    try:
        _main(argv)
    except typer.Exit as exc:  # settings or index refused: said on stderr already
        sys.exit(exc.exit_code)


def _main(argv: list[str] | None) -> None:
    limit_arenas()  # before any thread allocates
    args = _arguments(argv)
    _watch_lifeline(args.lifeline_fd)
    os.set_inheritable(args.ready_fd, False)
    logs.name_process(str(args.slot))

    from pacs.cli import open_archive_or_exit, settings_or_exit
    from pacs.connection_board import ConnectionBoard
    from pacs.errors import SettingsError
    from viewer_api.banner import StartUp
    from viewer_api.server import ListeningSockets, Role, serve

    settings = settings_or_exit()
    http = _adopt(args.http_fd)
    assert http is not None
    sockets = ListeningSockets(http, _adopt(args.dicom_fd), _adopt(args.dicom_tls_fd))
    os.set_inheritable(args.board_fd, False)
    board = ConnectionBoard(args.board_fd, args.processes, args.slot)

    def ready() -> None:
        os.write(args.ready_fd, b"R")
        os.close(args.ready_fd)

    archive = open_archive_or_exit(settings, migrate=False, create=False)  # the supervisor migrated it
    try:
        serve(archive, StartUp(created=False, admin=None), Role(args.slot, sockets, ready, board))
    except SettingsError as exc:
        log.error("%s", exc)
        sys.exit(2)
    finally:
        archive.close()


if __name__ == "__main__":
    main()
