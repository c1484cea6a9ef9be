#!/usr/bin/env python3
"""Drive vhost-blkd over its JSON-RPC socket with the Python standard library only.

    examples/orchestrate.py [-s /run/vhost-blkd/rpc.sock] [--dir DIR] [--name NAME]

The socket is -s, else $VHOST_BLKD_RPC_SOCKET, else the daemon's default (as vhost-blkctl).

What an orchestrator does for one VM disk, in order:

 1. creates a sparse backing file DIR/NAME.img (16 MiB) and a uring bdev on it
    (bdev_uring_create), with bdev_aio_create when io_uring is not served;
 2. creates the vhost-blk controller vhost.NAME for it (vhost_create_blk_controller);
    QEMU would now connect to the controller's socket;
 3. grows the disk to 32 MiB (bdev_resize: the daemon grows the file and tells a
    connected guest) and reads the new size back (bdev_get_bdevs);
 4. reads the I/O statistics (bdev_get_iostat, when rpc_get_methods lists it);
 5. deletes the controller and the bdev, and removes the file.

The wire format is SPDK's: one JSON object per request, responses are JSON
values back to back on the stream (no delimiter is guaranteed), matched by id.
Exit status 0 on success, 1 with the JSON-RPC error on stderr otherwise (the
script then undoes what it created).
"""

import argparse
import json
import os
import socket
import sys
import tempfile


class RPCError(Exception):
    """A JSON-RPC error response: code and message, as the daemon sent them."""

    def __init__(self, method, error):
        super().__init__(f"{method}: error {error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


class Client:
    """A minimal SPDK-compatible JSON-RPC client over a Unix stream socket."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = ""
        self.decoder = json.JSONDecoder()
        self.next_id = 1

    def call(self, method, params=None):
        request = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        if params:
            request["params"] = params
        self.next_id += 1
        self.sock.sendall(json.dumps(request).encode())
        response = self._read_value()
        if response.get("id") != request["id"]:
            raise RuntimeError(f"{method}: response id {response.get('id')} != {request['id']}")
        if "error" in response:
            raise RPCError(method, response["error"])
        return response["result"]

    def _read_value(self):
        """Reads until one complete JSON value is buffered, and returns it."""
        while True:
            text = self.buffer.lstrip()
            if text:
                try:
                    value, end = self.decoder.raw_decode(text)
                    self.buffer = text[end:]
                    return value
                except json.JSONDecodeError:
                    pass  # incomplete: read more
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the daemon closed the connection")
            self.buffer += chunk.decode()

    def close(self):
        self.sock.close()


MIB = 1024 * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_socket = os.environ.get("VHOST_BLKD_RPC_SOCKET") or "/run/vhost-blkd/rpc.sock"
    parser.add_argument("-s", "--server", default=default_socket, help="vhost-blkd RPC socket")
    parser.add_argument("--dir", default=None, help="where to create the backing file (default: a temporary directory)")
    parser.add_argument("--name", default="orch0", help="bdev name; the controller is vhost.NAME")
    args = parser.parse_args()

    workdir = args.dir or tempfile.mkdtemp(prefix="vhost-blkd-orchestrate.")
    image = os.path.abspath(os.path.join(workdir, f"{args.name}.img"))
    ctrlr = f"vhost.{args.name}"
    client = Client(args.server)
    undo = []  # (description, callable), run in reverse on failure

    try:
        version = client.call("spdk_get_version")["version"]
        methods = set(client.call("rpc_get_methods"))
        print(f"connected to {version} ({len(methods)} methods)")

        # 1. A 16 MiB sparse file as a bdev.
        with open(image, "wb") as f:
            f.truncate(16 * MIB)
        undo.append(("remove file", lambda: os.unlink(image)))
        create = "bdev_uring_create" if "bdev_uring_create" in methods else "bdev_aio_create"
        delete = create.replace("_create", "_delete")
        name = client.call(create, {"filename": image, "name": args.name, "block_size": 512})
        undo.append(("delete bdev", lambda: client.call(delete, {"name": args.name})))
        print(f"created bdev {name} with {create} on {image} (16 MiB)")

        # 2. Its controller; QEMU connects to the socket it reports.
        client.call("vhost_create_blk_controller", {"ctrlr": ctrlr, "dev_name": name})
        undo.append(("delete controller", lambda: client.call("vhost_delete_controller", {"ctrlr": ctrlr})))
        [controller] = client.call("vhost_get_controllers", {"name": ctrlr})
        print(f"created controller {ctrlr} on cpumask {controller['cpumask']}, socket {controller['socket']}")

        # 3. Grow it; a connected guest gets a config-change interrupt.
        client.call("bdev_resize", {"name": name, "new_size_mib": 32})
        [bdev] = client.call("bdev_get_bdevs", {"name": name})
        size_mib = bdev["num_blocks"] * bdev["block_size"] // MIB
        print(f"resized bdev {name} to {size_mib} MiB ({bdev['num_blocks']} blocks of {bdev['block_size']})")
        if size_mib != 32:
            raise RuntimeError(f"expected 32 MiB after bdev_resize, got {size_mib}")

        # 4. Statistics, where the daemon has them.
        if "bdev_get_iostat" in methods:
            stats = client.call("bdev_get_iostat", {"name": name})
            [entry] = stats["bdevs"]
            print(f"iostat {name}: read_ops={entry['num_read_ops']} write_ops={entry['num_write_ops']} "
                  f"bytes_read={entry['bytes_read']} bytes_written={entry['bytes_written']}")
        else:
            print("iostat skipped: this daemon has no bdev_get_iostat")

        # 5. Tear down, controller first (it holds the bdev).
        client.call("vhost_delete_controller", {"ctrlr": ctrlr})
        client.call(delete, {"name": name})
        os.unlink(image)
        undo.clear()
        print(f"deleted controller {ctrlr} and bdev {name}")
    except (RPCError, RuntimeError, OSError, KeyError, ValueError) as error:
        print(f"orchestrate.py: {error}", file=sys.stderr)
        for what, action in reversed(undo):
            try:
                action()
            except Exception as cleanup_error:  # keep undoing the rest
                print(f"orchestrate.py: {what} failed: {cleanup_error}", file=sys.stderr)
        return 1
    finally:
        client.close()
        if args.dir is None:
            try:
                os.rmdir(workdir)
            except OSError:
                pass
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
