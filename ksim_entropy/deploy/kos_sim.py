"""K-Scale's kos-sim (0.0.14) serving this project's K-Bot (`assets/kbot`) offline, from its own environment.

kos-sim cannot share `.venv` (it needs kmv 0.1.x and numpy < 2.3): `python3 bootstrap.py kos-sim` makes
`.venv-kos-sim`. It finds its robot only through the K-Scale API client, `kscale.K().download_and_extract_urdf(name)`
and the robot class's metadata, each cached under `<www.base_dir>/robots/<name>/` (`robot.tgz` with `.info.json`
holding its md5 in quotes, `metadata.json`) and used without a network call while younger than
`www.refresh_interval_minutes`. `seed_kscale_cache` writes that cache from `assets/kbot` with a `settings.yaml` that
points kscale at it (API root: a closed local port), so `KSCALE_CONFIG_DIR` makes kos-sim start offline.

kos-sim's behaviour as seen by a KOS client (`kos_sim/simulator.py`, `services.py`): physics in bursts of one
control period (20 ms) on the server's event loop, so reads inside a burst repeat and a read that arrives during one
waits for it; the gyroscope in rad/s (the proto says deg/s); `max_torque` applied as N·m (the proto says %);
`torque_enabled` ignored; actuator states carry position, velocity and `online` only.

    python -m ksim_entropy.deploy.kos_sim --port 50051 [--robot local]   # serve until Ctrl-C
"""

import argparse
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from kos_protos import imu_pb2_grpc

from ksim_entropy.kbot.robot import RobotFiles, resolve_robot_files

__all__ = ["KOS_SIM_PYTHON", "ROBOT_NAME", "KosSimProcess", "kos_sim_installed", "kos_sim_python", "seed_kscale_cache"]

ROBOT_NAME = "kbot-ksim-entropy"
KOS_SIM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kos-sim" / "bin" / "python"


def kos_sim_python() -> Path:
    """The kos-sim environment's interpreter (`KSIM_ENTROPY_KOS_SIM_VENV` overrides, as in bootstrap.py)."""
    venv = os.environ.get("KSIM_ENTROPY_KOS_SIM_VENV")
    return Path(venv) / "bin" / "python" if venv else KOS_SIM_PYTHON


def kos_sim_installed() -> bool:
    """Whether `python3 bootstrap.py kos-sim` finished installing the kos-sim environment (it stamps it last)."""
    return (kos_sim_python().parent.parent / ".kos-sim-pins-sha256").exists()


def seed_kscale_cache(files: RobotFiles, root: Path, name: str = ROBOT_NAME) -> dict[str, str]:
    """Write a K-Scale cache holding the robot `name` under `root`; returns the environment that points kscale at it."""
    robot_dir = root / "data" / "robots" / name
    robot_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:  # kos-sim loads the one *.mjcf without "suspended"
        blob = files.mjcf.read_bytes()
        info = tarfile.TarInfo("robot.mjcf")
        info.size, info.mtime = len(blob), 0
        tar.addfile(info, io.BytesIO(blob))
    archive = buffer.getvalue()
    (robot_dir / "robot.tgz").write_bytes(archive)
    (robot_dir / ".info.json").write_text(json.dumps({"md5_hash": f'"{hashlib.md5(archive).hexdigest()}"'}))
    (robot_dir / "metadata.json").write_text(files.metadata.read_text())
    config = root / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.yaml").write_text(
        f"www:\n  api_root: http://127.0.0.1:9\n  base_dir: {root / 'data'}\n  refresh_interval_minutes: 100000000\n"
    )
    return {"KSCALE_CONFIG_DIR": str(config)}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class KosSimProcess:
    """kos-sim on `host` (a free port), no rendering, its cache seeded under a temporary folder; a context manager.

    `args` are extra kos-sim options (`--start-height 1.05`, `--suspended` needs a `*.suspended.mjcf`: not seeded).
    Raises `FileNotFoundError` when the kos-sim environment is missing, `RuntimeError` (with its output) when it does
    not come up.
    """

    def __init__(
        self, *args: str, files: RobotFiles | None = None, host: str = "127.0.0.1", timeout_s: float = 120.0
    ) -> None:
        python = kos_sim_python()
        if not kos_sim_installed():
            raise FileNotFoundError(f"no kos-sim environment at {python}: run `python3 bootstrap.py kos-sim`")
        self.workdir = tempfile.TemporaryDirectory(prefix="kos-sim-")
        root = Path(self.workdir.name)
        env = {**os.environ, **seed_kscale_cache(files or resolve_robot_files("local"), root), "PYTHONUNBUFFERED": "1"}
        env.pop("KSCALE_DIR", None)
        self.host, self.port = host, _free_port(host)
        command = [str(python), "-m", "kos_sim.server", ROBOT_NAME, "--no-render", "--host", host]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *args],
            cwd=root,  # --no-render makes a ./videos folder
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        # kos-sim logs nothing when its output is not a terminal (colorlogging): wait until its IMU service answers
        self.output: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self.output.extend, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"{host}:{self.port}") as channel:
            imu = imu_pb2_grpc.IMUServiceStub(channel)
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    imu.GetValues(empty_pb2.Empty(), timeout=1.0)
                    return
                except grpc.RpcError:
                    time.sleep(0.2)
        self.close()
        raise RuntimeError("kos-sim did not start:\n" + "".join(self.output[-30:]))

    def close(self) -> None:
        stop_process(self.process)
        self.workdir.cleanup()

    def __enter__(self) -> "KosSimProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ksim_entropy.deploy.kos_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--robot", default="local", help="robot model: local | <dir> | kscale:<name>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--start-height", type=float, default=None, help="m (kos-sim's default: 1.5, a drop)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kos-sim-") as root:
        env = {**os.environ, **seed_kscale_cache(resolve_robot_files(args.robot), Path(root))}
        height = () if args.start_height is None else ("--start-height", str(args.start_height))
        command = [str(kos_sim_python()), "-m", "kos_sim.server", ROBOT_NAME, "--no-render", "--host", args.host]
        try:
            subprocess.run([*command, "--port", str(args.port), *height], cwd=root, env=env, check=False)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate a child process if it still runs, kill it if it has not exited `timeout_s` later, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
