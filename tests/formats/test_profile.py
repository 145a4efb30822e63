"""Entropy profile: numbers against scipy / POT / numpy oracles, the JSON contract, every bad input, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
from scipy import stats

from ksim_entropy.bridge.cli import main
from ksim_entropy.bridge.logs import read_ndjson, write_ndjson
from ksim_entropy.formats.profile import FORMAT, VERSION, EntropyProfile, EntropyProfileError, GroupProfile
from ksim_entropy.formats.schema import StepLog

REPO = Path(__file__).resolve().parents[2]
CLI_PREFIX = "python -m ksim_entropy.bridge"
JOINTS = ("dof_left_hip_pitch_04", "dof_left_knee_04", "dof_right_hip_pitch_04", "dof_right_knee_04")
N = 4000
TRUE = {  # group → (mean, std) per channel, in the group's unit
    "joint_angles": (np.array([0.3, -0.6, 0.25, 1.1]), np.array([0.05, 0.2, 0.1, 0.4])),
    "joint_vels": (np.array([0.0, 0.1, -0.2, 0.0]), np.array([1.5, 0.7, 2.0, 0.9])),
    "projected_g": (np.array([0.1, -0.2, -9.8]), np.array([0.3, 0.3, 0.05])),
    "gyro": (np.array([0.0, 0.01, -0.02]), np.array([0.4, 0.25, 0.15])),
}


def gaussian_log(seed: int = 0, n: int = N, **extra: np.ndarray) -> tuple[StepLog, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data = {g: mu + sd * rng.standard_normal((n, mu.size)) for g, (mu, sd) in TRUE.items()}
    data.update(extra)
    return StepLog.from_arrays(**data, dt_s=0.02, joint_names=JOINTS, source="synthetic"), data


@pytest.fixture(scope="module")
def profile() -> EntropyProfile:
    return EntropyProfile.from_log(gaussian_log()[0])


# ------------------------------------------------------------------------------------------------------------- numbers


def test_entropy_equals_scipy_normal_entropy() -> None:
    std = np.random.default_rng(1).uniform(1e-3, 5.0, 7)
    group = GroupProfile(tuple(f"c{i}" for i in range(7)), "rad", np.zeros(7), std, 10)
    oracle = sum(stats.norm(scale=s).entropy() for s in std)
    assert group.entropy_nats == pytest.approx(oracle, rel=1e-13, abs=1e-13)
    assert group.entropy_per_channel == pytest.approx(oracle / 7, rel=1e-13, abs=1e-13)
    unit = GroupProfile(("a",), "rad", [0.0], [1.0 / np.sqrt(2 * np.pi * np.e)], 2)
    assert abs(unit.entropy_nats) < 1e-15  # σ² = 1/(2πe) → h = 0


def test_from_log_recovers_numpy_statistics_exactly_and_the_truth_within_sampling_error(
    profile: EntropyProfile,
) -> None:
    _, data = gaussian_log()
    assert list(profile.groups) == ["joint_angles", "joint_vels", "projected_g", "gyro"]
    assert profile.source == "synthetic"
    assert profile.groups["joint_angles"].channels == tuple(f"joint_angles/{j}" for j in JOINTS)
    assert profile.groups["gyro"].channels == ("gyro/x", "gyro/y", "gyro/z")
    assert {g: p.unit for g, p in profile.groups.items()} == {
        "joint_angles": "rad",
        "joint_vels": "rad/s",
        "projected_g": "m/s^2",
        "gyro": "rad/s",
    }
    for name, (mu, sd) in TRUE.items():
        group, x = profile.groups[name], data[name]
        np.testing.assert_array_equal(group.mean, [x[:, j].mean() for j in range(mu.size)])
        np.testing.assert_array_equal(group.std, [x[:, j].std(ddof=1) for j in range(mu.size)])
        assert group.num_samples == N
        assert np.all(np.abs(group.mean - mu) < 5 * sd / np.sqrt(N))  # 5 standard errors of the mean
        assert np.all(np.abs(group.std - sd) < 5 * sd / np.sqrt(2 * (N - 1)))  # ... and of σ̂
    assert not profile.groups["gyro"].mean.flags.writeable
    with pytest.raises(TypeError):
        profile.groups["gyro"] = profile.groups["joint_vels"]  # type: ignore[index]


def test_nan_rows_are_skipped_for_that_channel_only() -> None:
    log, data = gaussian_log()
    angles = data["joint_angles"].copy()
    missing = np.random.default_rng(2).choice(N, 300, replace=False)
    angles[missing, 1] = np.nan
    nan_log = StepLog.from_arrays(**{**data, "joint_angles": angles}, dt_s=0.02, joint_names=JOINTS)
    group = EntropyProfile.from_log(nan_log, ["joint_angles"]).groups["joint_angles"]
    full = EntropyProfile.from_log(log, ["joint_angles"]).groups["joint_angles"]
    kept = np.delete(data["joint_angles"][:, 1], missing)
    assert group.mean[1] == kept.mean() and group.std[1] == kept.std(ddof=1)
    others = [0, 2, 3]
    np.testing.assert_array_equal(group.mean[others], full.mean[others])
    np.testing.assert_array_equal(group.std[others], full.std[others])
    assert group.num_samples == N - 300  # the least-observed channel


def test_a_constant_channel_is_floored_at_min_std() -> None:
    log, _ = gaussian_log(command=np.tile([0.5, 0.0], (N, 1)))
    group = EntropyProfile.from_log(log, ["command"], min_std=1e-4).groups["command"]
    np.testing.assert_array_equal(group.std, [1e-4, 1e-4])
    np.testing.assert_array_equal(group.mean, [0.5, 0.0])
    assert group.unit == "per-command" and np.isfinite(group.entropy_nats)


def test_w2_equals_the_closed_form_pot_bures_and_empirical_1d_transport(profile: EntropyProfile) -> None:
    group = profile.groups["joint_angles"]
    mean2, std2 = group.mean + np.array([0.1, -0.3, 0.0, 0.2]), group.std * np.array([1.5, 0.5, 1.0, 2.0])
    closed = np.sqrt(np.sum((group.mean - mean2) ** 2) + np.sum((group.std - std2) ** 2))
    value = group.w2(mean2, std2)
    assert value == pytest.approx(closed, rel=1e-14)
    bures = ot.gaussian.bures_wasserstein_distance(group.mean, mean2, np.diag(group.std**2), np.diag(std2**2))
    assert value == pytest.approx(float(bures), rel=1e-7)
    rng = np.random.default_rng(3)
    n = 200_000
    x = group.mean + group.std * rng.standard_normal((n, 4))
    y = mean2 + std2 * rng.standard_normal((n, 4))
    empirical = np.sqrt(np.sum(ot.wasserstein_1d(x, y, p=2)))  # W2 of independent channels: Σ of 1-D W2²
    assert value == pytest.approx(empirical, rel=1e-2)
    assert group.w2(group.mean, group.std) == 0.0
    assert group.w2(group.mean, np.zeros(4)) == pytest.approx(np.linalg.norm(group.std), rel=1e-14)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        (np.zeros(3), np.ones(4), r"field 'mean': shape \(3,\) does not match the 4 channels"),
        (np.zeros(4), np.ones(5), r"field 'std': shape \(5,\)"),
        (np.zeros(4), [1.0, -1.0, 1.0, 1.0], "field 'std': must be >= 0"),
        ([0.0, np.nan, 0.0, 0.0], np.ones(4), "field 'mean': channel 'joint_angles/dof_left_knee_04'.*finite"),
        (np.zeros(4), "abc", "field 'std': not an array of numbers"),
    ],
)
def test_w2_rejects_bad_arguments(profile: EntropyProfile, mean: object, std: object, match: str) -> None:
    with pytest.raises(EntropyProfileError, match=match):
        profile.groups["joint_angles"].w2(mean, std)


# ------------------------------------------------------------------------------------------------------------- files


def test_save_load_roundtrip_is_exact_and_follows_the_contract(profile: EntropyProfile, tmp_path: Path) -> None:
    path = profile.save(tmp_path / "sub" / "profile.json")
    loaded = EntropyProfile.load(path)
    assert loaded == profile and loaded is not profile
    for name, group in profile.groups.items():
        assert loaded.groups[name].channels == group.channels
        assert loaded.groups[name].mean.tobytes() == group.mean.tobytes()
        assert loaded.groups[name].std.tobytes() == group.std.tobytes()
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["format", "version", "source", "groups"]
    assert (data["format"], data["version"], data["source"]) == (FORMAT, VERSION, "synthetic")
    assert FORMAT == "ksim-entropy/entropy-profile" and VERSION == 1
    entry = data["groups"]["gyro"]
    assert list(entry) == ["channels", "unit", "mean", "std", "num_samples", "entropy_nats"]
    assert entry["entropy_nats"] == profile.groups["gyro"].entropy_nats and entry["num_samples"] == N
    assert EntropyProfile.from_dict(profile.to_dict()) == profile
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]  # no temp file left


def test_save_refuses_an_existing_file_unless_overwrite(profile: EntropyProfile, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(b"user's own file\n")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        profile.save(path)
    assert path.read_bytes() == b"user's own file\n"
    profile.save(path, overwrite=True)
    assert EntropyProfile.load(path) == profile
    with pytest.raises(IsADirectoryError):
        profile.save(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]


def _good() -> dict:
    return EntropyProfile.from_log(gaussian_log(n=50)[0], ["joint_angles", "gyro"]).to_dict()


def _edit(**changes: object) -> dict:
    d = _good()
    for key, value in changes.items():
        target = d
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return d


def _text(d: object) -> str:
    return json.dumps(d)  # allow_nan: NaN / Infinity become JSON's non-standard literals


GYRO_STD = "groups.gyro.std"
BAD_FILES = {
    "not_json": ("{not json", "not valid JSON"),
    "not_utf8": (b"\xff\xfe{}", "not UTF-8"),
    "not_object": (_text([1, 2]), "must be a JSON object, got list"),
    "duplicate_key": ('{"format": 1, "format": 2}', "duplicate key 'format'"),
    "format": (_text(_edit(format="other/thing")), "field 'format': 'other/thing' is not"),
    "no_format": (_text(_edit(format=KeyError)), "field 'format': missing"),
    "version_2": (_text(_edit(version=2)), "field 'version': unsupported version 2"),
    "version_str": (_text(_edit(version="1")), "field 'version': unsupported version '1'"),
    "version_bool": (_text(_edit(version=True)), "field 'version': unsupported version True"),
    "extra_key": (_text(_edit(notes="x")), r"unknown keys \['notes'\]"),
    "source_type": (_text(_edit(source=3)), "field 'source': must be a string"),
    "no_groups": (_text(_edit(groups={})), "field 'groups': must be a non-empty object"),
    "groups_missing": (_text(_edit(groups=KeyError)), "field 'groups': missing"),
    "groups_list": (_text(_edit(groups=[1])), "field 'groups': must be a non-empty object"),
    "unknown_group": (_text(_edit(**{"groups.imu": _good()["groups"]["gyro"]})), "group 'imu': unknown channel group"),
    "group_not_object": (_text(_edit(**{"groups.gyro": [1]})), "group 'gyro': must be a JSON object"),
    "group_extra_key": (_text(_edit(**{"groups.gyro.var": [1]})), r"group 'gyro': unknown keys \['var'\]"),
    "std_missing": (_text(_edit(**{GYRO_STD: KeyError})), "group 'gyro': field 'std': missing"),
    "std_type": (_text(_edit(**{GYRO_STD: "abc"})), "group 'gyro': field 'std': must be a list of numbers"),
    "std_bool": (_text(_edit(**{GYRO_STD: [True, 1.0, 1.0]})), "group 'gyro': field 'std': must be a list"),
    "mean_str": (_text(_edit(**{"groups.gyro.mean": [0.0, "x", 0.0]})), "group 'gyro': field 'mean': must be"),
    "mean_nan": (_text(_edit(**{"groups.gyro.mean": [0.0, float("nan"), 0.0]})), "field 'mean': channel 'gyro/y'"),
    "std_inf": (_text(_edit(**{GYRO_STD: [1.0, float("inf"), 1.0]})), "group 'gyro': field 'std': channel 'gyro/y'"),
    "std_huge": (
        '{"format": "ksim-entropy/entropy-profile", "version": 1, "source": "", "groups": {"gyro": '
        '{"channels": ["gyro/x"], "unit": "rad/s", "mean": [0], "std": [1e999], "num_samples": 9, '
        '"entropy_nats": 1}}}',
        r"group 'gyro': field 'std': channel 'gyro/x' \(index 0\) is inf",
    ),
    "std_zero": (_text(_edit(**{GYRO_STD: [0.1, 0.0, 0.1]})), "group 'gyro': field 'std': channel 'gyro/y'.*> 0"),
    "std_negative": (_text(_edit(**{GYRO_STD: [0.1, 0.1, -0.1]})), "group 'gyro': field 'std': .*must be > 0"),
    "std_length": (_text(_edit(**{GYRO_STD: [0.1, 0.1]})), r"group 'gyro': field 'std': shape \(2,\) does not"),
    "channels_type": (_text(_edit(**{"groups.gyro.channels": "xyz"})), "group 'gyro': field 'channels': must be"),
    "channels_empty": (_text(_edit(**{"groups.gyro.channels": []})), "group 'gyro': field 'channels': no channels"),
    "channels_repeated": (
        _text(_edit(**{"groups.gyro.channels": ["gyro/x", "gyro/x", "gyro/z"]})),
        r"group 'gyro': field 'channels': .*unique; repeated \['gyro/x'\]",
    ),
    "unit_type": (_text(_edit(**{"groups.gyro.unit": None})), "group 'gyro': field 'unit': must be a string"),
    "unit_wrong": (_text(_edit(**{"groups.gyro.unit": "deg/s"})), "group 'gyro': field 'unit': 'deg/s' is not"),
    "num_samples_1": (_text(_edit(**{"groups.gyro.num_samples": 1})), "group 'gyro': field 'num_samples': .*>= 2"),
    "num_samples_float": (_text(_edit(**{"groups.gyro.num_samples": 50.0})), "field 'num_samples': must be an int"),
    "num_samples_bool": (_text(_edit(**{"groups.gyro.num_samples": True})), "field 'num_samples': must be an int"),
    "entropy_tampered": (
        _text(_edit(**{"groups.gyro.entropy_nats": _good()["groups"]["gyro"]["entropy_nats"] * (1 + 1e-5)})),
        "group 'gyro': field 'entropy_nats': stored .* the file is corrupt or was edited",
    ),
    "entropy_missing": (_text(_edit(**{"groups.gyro.entropy_nats": KeyError})), "field 'entropy_nats': missing"),
    "entropy_nan": (_text(_edit(**{"groups.gyro.entropy_nats": float("nan")})), "field 'entropy_nats': must be"),
    "entropy_str": (_text(_edit(**{"groups.gyro.entropy_nats": "1.0"})), "field 'entropy_nats': must be"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_rejects_bad_files_naming_path_group_and_field(case: str, tmp_path: Path) -> None:
    content, match = BAD_FILES[case]
    path = tmp_path / f"{case}.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(EntropyProfileError, match=match) as info:
        EntropyProfile.load(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_load_rejects_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(EntropyProfileError, match=f"^{tmp_path / 'none.json'}: no such file$"):
        EntropyProfile.load(tmp_path / "none.json")
    with pytest.raises(EntropyProfileError, match=f"^{tmp_path}: is a directory"):
        EntropyProfile.load(tmp_path)


def test_a_small_entropy_disagreement_within_tolerance_is_accepted(tmp_path: Path) -> None:
    d = _good()
    d["groups"]["gyro"]["entropy_nats"] *= 1 + 1e-8
    assert EntropyProfile.from_dict(d).groups["gyro"].entropy_nats != d["groups"]["gyro"]["entropy_nats"]


def test_from_dict_without_a_path_names_group_and_field() -> None:
    d = _edit(**{GYRO_STD: [0.1, 0.0, 0.1]})
    with pytest.raises(EntropyProfileError, match=r"^group 'gyro': field 'std': channel 'gyro/y' \(index 1\)"):
        EntropyProfile.from_dict(d)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": [1.0, 0.0]}, "field 'std': channel 'b' .* must be > 0"),
        ({"mean": [0.0, np.inf]}, "field 'mean': channel 'b' .* must be finite"),
        ({"mean": [0.0]}, r"field 'mean': shape \(1,\)"),
        ({"channels": ("a", "a")}, r"field 'channels': .*repeated \['a'\]"),
        ({"channels": ()}, "field 'channels': no channels"),
        ({"channels": "ab"}, "field 'channels': must be a sequence"),
        ({"num_samples": 1}, "field 'num_samples': must be an integer >= 2"),
        ({"unit": 1}, "field 'unit': must be a string"),
    ],
)
def test_group_profile_validates(kwargs: dict, match: str) -> None:
    args = {"channels": ("a", "b"), "unit": "rad", "mean": [0.0, 1.0], "std": [1.0, 2.0], "num_samples": 5}
    with pytest.raises(EntropyProfileError, match=match):
        GroupProfile(**{**args, **kwargs})


def test_from_log_rejects_bad_requests() -> None:
    log, data = gaussian_log(n=20)
    few = data["joint_vels"].copy()
    few[1:, 2] = np.nan
    cases = [
        (log, {"groups": ["joint_angles", "accel"]}, r"group 'accel': not in the log synthetic; it has \['joint_an"),
        (log, {"groups": ["imu"]}, "group 'imu': unknown channel group"),
        (log, {"groups": "gyro"}, "field 'groups': must be a non-empty sequence"),
        (log, {"groups": []}, "field 'groups': must be a non-empty sequence"),
        (log, {"groups": ["gyro", "gyro"]}, "field 'groups': repeated group names"),
        (log, {"min_std": 0.0}, "field 'min_std': must be a finite number > 0"),
        (log, {"min_std": float("nan")}, "field 'min_std'"),
        (
            StepLog.from_arrays(**{**data, "joint_vels": few}, dt_s=0.02, joint_names=JOINTS),
            {"groups": ["joint_vels"]},
            r"group 'joint_vels'.*joint_vels/dof_right_hip_pitch_04 has 1 sample\(s\) after dropping 19 NaN",
        ),
        (
            StepLog.from_arrays(gyro=np.where(np.arange(60).reshape(20, 3) == 7, np.inf, 0.0), dt_s=0.02),
            {"groups": ["gyro"]},
            r"group 'gyro'.*gyro/y contains ±Inf",
        ),
    ]
    for bad_log, kwargs, match in cases:
        with pytest.raises(EntropyProfileError, match=match):
            EntropyProfile.from_log(bad_log, **kwargs)


def test_profile_rejects_groups_outside_the_schema() -> None:
    gyro = GroupProfile(("x",), "rad/s", [0.0], [1.0], 3)
    with pytest.raises(EntropyProfileError, match="field 'groups': an entropy profile needs at least one group"):
        EntropyProfile({})
    with pytest.raises(EntropyProfileError, match="group 'joint_angles': field 'unit': 'rad/s' is not .*'rad'"):
        EntropyProfile({"joint_angles": gyro})
    with pytest.raises(EntropyProfileError, match="group 'gyro': must be a GroupProfile"):
        EntropyProfile({"gyro": {"mean": [0.0]}})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("profile_cli")
    write_ndjson(gaussian_log(n=300)[0], work / "log.ndjson")
    no_gyro = {g: v for g, v in gaussian_log(n=50)[1].items() if g != "gyro"}
    write_ndjson(StepLog.from_arrays(**no_gyro, dt_s=0.02), work / "no_gyro.ndjson")
    (work / "garbage.ndjson").write_bytes(np.random.default_rng(0).bytes(3000))
    (work / "taken.json").write_text("mine\n")
    return work


def test_cli_profile_writes_the_file_and_prints_a_summary(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", str(logs / "log.ndjson"), "--out", str(out)]) == 0
    expected = EntropyProfile.from_log(read_ndjson(logs / "log.ndjson")[0], source=str(logs / "log.ndjson"))
    assert EntropyProfile.load(out) == expected
    printed = capsys.readouterr().out
    assert "joint_angles [4 × rad]: n=300" in printed and "nats/channel" in printed and f"written to {out}" in printed
    assert main(["profile", str(logs / "log.ndjson"), "--out", str(out), "--groups", "gyro, joint_vels"]) == 2
    assert EntropyProfile.load(out) == expected  # refused: still the first profile
    assert (
        main(["profile", str(logs / "log.ndjson"), "--out", str(out), "--groups", "gyro,joint_vels", "--overwrite"])
        == 0
    )
    assert list(EntropyProfile.load(out).groups) == ["gyro", "joint_vels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ndjson", "--out", "o.json"], "missing.ndjson: no such file"),
        (["garbage.ndjson", "--out", "o.json"], "no valid step record"),
        (["log.ndjson", "--out", "taken.json"], "taken.json exists; pass --overwrite"),
        (["log.ndjson", "--out", "log.ndjson", "--overwrite"], "is the input log"),
        (["log.ndjson", "--out", "o.json", "--groups", "gyro,imu"], "--groups: unknown groups ['imu']"),
        (["log.ndjson", "--out", "o.json", "--groups", ","], "--groups: no group named"),
        (["no_gyro.ndjson", "--out", "o.json"], "group 'gyro': not in the log"),
        (["log.ndjson", "--out", "o.json", "--num-joints", "0"], "must be >= 1"),
    ],
)
def test_cli_profile_bad_input_exits_2_with_one_line(
    logs: Path, args: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(logs)
    before = {p.name: p.read_bytes() for p in logs.iterdir()}
    assert main(["profile", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{CLI_PREFIX} profile: error: ") and message in lines[0], lines
    assert {p.name: p.read_bytes() for p in logs.iterdir()} == before  # nothing written, nothing changed


def test_process_exit_and_profile_import_stays_numpy(logs: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ksim_entropy.bridge", "profile", str(logs / "garbage.ndjson"), "--out", "x.json"],
        cwd=logs,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    code = (
        "import sys, ksim_entropy.formats.profile; "
        "print(sorted(m for m in ('jax', 'ksim', 'mujoco', 'xax', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
