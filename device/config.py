"""The camera agent's configuration: one commented TOML file in the data directory.

The model rejects unknown keys everywhere, so a misspelt ``pre_rol_seconds`` is an error at
start-up rather than a silently ignored setting. Polygons (privacy masks, motion zones) are
lists of ``[x, y]`` points as fractions of the frame (0..1), so they survive a resolution change.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DATA_DIR_ENV = "PORCHLIGHT_DEVICE_DIR"
CONFIG_NAME = "config.toml"

Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
Polygon = list[Point]


class ConfigError(Exception):
    """The configuration file is missing, not TOML, or fails validation."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_polygons(polygons: list[Polygon]) -> list[Polygon]:
    for polygon in polygons:
        if len(polygon) < 3:
            raise ValueError("a polygon needs at least 3 points")
    return polygons


class CameraConfig(_Strict):
    # "0" = first USB camera, a path, rtsp://..., or "picamera2" for a Pi camera module.
    source: str = "0"
    width: int = Field(default=1280, ge=64, le=7680)
    height: int = Field(default=720, ge=64, le=4320)
    fps: float = Field(default=15.0, gt=0, le=120)


class MotionConfig(_Strict):
    threshold: int = Field(default=20, ge=1, le=255)  # grey levels; lower = more sensitive
    min_area: float = Field(default=0.005, gt=0, le=1)  # fraction of the zone that must change
    min_frames: int = Field(default=2, ge=1, le=100)  # consecutive frames over min_area to count
    learn_seconds: float = Field(default=2.0, gt=0)
    absorb_seconds: float = Field(default=60.0, ge=0)
    analysis_width: int = Field(default=320, ge=64, le=1920)
    analysis_fps: float = Field(default=10.0, gt=0, le=120)
    zones: list[Polygon] = []

    _zones = field_validator("zones")(_check_polygons)


class RecordingConfig(_Strict):
    pre_roll_seconds: float = Field(default=5.0, ge=0, le=60)
    post_roll_seconds: float = Field(default=10.0, ge=0, le=600)
    max_clip_seconds: float = Field(default=300.0, ge=10, le=3600)
    keyframe_seconds: float = Field(default=1.0, ge=0.5, le=2.0)
    preset: str = "veryfast"
    crf: int = Field(default=26, ge=0, le=51)
    encoder_threads: int = Field(default=0, ge=0, le=16)  # 0 = let x264 choose


class RetentionConfig(_Strict):
    max_age_days: float = Field(default=14.0, gt=0)
    min_free_fraction: float = Field(default=0.10, ge=0, lt=1)


class KeysConfig(_Strict):
    # The homeowner's age recipients (public keys). The Pi never needs the identity to record.
    recipients: list[str] = Field(min_length=1)
    # Passphrase-protected homeowner identity, if `init` generated one here.
    identity_file: str | None = None


class DeviceConfig(_Strict):
    camera: CameraConfig = CameraConfig()
    privacy_masks: list[Polygon] = []
    motion: MotionConfig = MotionConfig()
    recording: RecordingConfig = RecordingConfig()
    retention: RetentionConfig = RetentionConfig()
    keys: KeysConfig

    _masks = field_validator("privacy_masks")(_check_polygons)


def default_data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "porchlight-device"


def parse_config(text: str, origin: str = CONFIG_NAME) -> DeviceConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin} is not valid TOML: {error}") from None
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from None


def load_config(data_dir: Path) -> DeviceConfig:
    path = data_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {path}") from None
    return parse_config(text, str(path))


def _toml_list(values: list[str]) -> str:
    return (
        "["
        + ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "]"
    )


def config_template(source: str, recipients: list[str], identity_file: str | None) -> str:
    """The commented file `porchlight device init` writes."""
    identity_line = (
        f'identity_file = "{identity_file}"'
        if identity_file
        else '# identity_file = "homeowner.age"  (kept off the Pi: decrypt on your own machine)'
    )
    return f"""\
# Porchlight camera agent. Unknown keys are rejected; restart the agent after editing.
# Polygons are lists of [x, y] points as fractions of the frame, (0, 0) = top left.

# Privacy masks are blacked out before motion detection and before encoding: masked pixels
# are black in every recording. Example, the top-right quarter (a neighbour's window):
# privacy_masks = [[[0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [0.5, 0.5]]]
privacy_masks = []

[camera]
# "0" = first USB camera, a file path, an rtsp:// URL, or "picamera2" for a Pi camera module.
source = {_toml_list([source])[1:-1]}
width = 1280
height = 720
fps = 15

[motion]
threshold = 20          # grey levels a pixel must change by; lower is more sensitive
min_area = 0.005        # fraction of the motion zones that must change to count as motion
min_frames = 2          # ...in this many consecutive frames (one-frame flickers are noise)
learn_seconds = 2.0     # how fast the background follows slow light changes
absorb_seconds = 60.0   # how long something that stopped moving stays "present"
analysis_width = 320    # motion runs on a downscaled copy this wide...
analysis_fps = 10.0     # ...this many times a second (every frame is still recorded)
# Only motion inside these polygons starts a recording; empty = the whole frame.
zones = []

[recording]
pre_roll_seconds = 5.0
post_roll_seconds = 10.0
max_clip_seconds = 300.0
keyframe_seconds = 1.0  # one GOP; the pre-roll is kept as encoded GOPs, not raw frames
preset = "veryfast"     # x264 preset
crf = 26
encoder_threads = 0     # 0 = automatic

[retention]
max_age_days = 14.0
min_free_fraction = 0.10  # delete oldest clips to keep this much of the filesystem free

[keys]
# Clips are encrypted to these age recipients only; the Pi cannot decrypt them.
recipients = {_toml_list(recipients)}
{identity_line}
"""
