"""Configuration is validated at load: every bad value is refused with an error naming its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from splitca.config import Settings, parse_duration
from splitca.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("5y", 157680000)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["soon", "-5d", "0", "5w", True, 1.5, None, "1 2d"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad, key="crl_ttl")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"port": "x"}, "port"),
        ({"port": 0}, "port"),
        ({"key_type": "dsa"}, "key_type"),
        ({"key_size": 1024}, "key_size"),
        ({"ec_curve": "P-521"}, "ec_curve"),
        ({"server_key_type": "dsa"}, "server_key_type"),
        ({"ca_ttl": "60y"}, "ca_ttl"),
        ({"crl_ttl": "10m"}, "crl_ttl"),
        ({"crl_ttl": "2d", "crl_refresh_margin": "3d"}, "crl_refresh_margin"),
        ({"certname": "Bad Name"}, "certname"),
        ({"dns_alt_names": ["FTP:x"]}, "dns_alt_names"),
        ({"autosign": "relative/path"}, "autosign"),
        ({"autosign": 3}, "autosign"),
        ({"admin_certnames": ["*"]}, "admin_certnames"),
        ({"allow_subject_alt_names": "yes"}, "allow_subject_alt_names"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"socket_timeout": "300y"}, "socket_timeout"),
        ({"socket_timeout": "2h"}, "socket_timeout"),
        ({"listen": "not an address!"}, "listen"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"cadir": ""}, "cadir"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_values_name_their_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_mapping({"cadir": "/tmp/ca", "certname": "ca.test", **raw})


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    for text, expect in (("[1, 2]", "mapping"), ("a: [", "not valid YAML"), ("port: x", "port")):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=expect) as info:
            Settings.load(cfg)
        assert str(cfg) in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "missing.yaml")


def test_overrides_win_and_defaults_are_safe(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cadir: /srv/ca\nport: 9000\nautosign: true\n")
    s = Settings.load(cfg, {"port": 8141, "cadir": None})
    assert s.port == 8141 and s.cadir == Path("/srv/ca") and s.autosign is True
    d = Settings.from_mapping({"cadir": "/srv/ca", "certname": "ca.test"})
    assert (
        d.autosign is False
        and not d.allow_subject_alt_names
        and not d.allow_authorization_extensions
    )
    assert d.crl_ttl == dt.timedelta(days=7) and d.listen == "127.0.0.1"
    assert d.effective_ca_name == "Puppet CA: ca.test"


# --- every field coerces by its real type ------------------------------------------------------

_BAD_BY_TYPE: dict[object, object] = {
    dt.timedelta: "soon",
    dt.timedelta | None: "soon",
    Path: 5,
    Path | None: "",
    bool: "yes",
    bool | str: 3,
    int: True,
    str: 5,
    tuple[str, ...]: [1],
}


def _yaml_form(value: object) -> object:
    """What a config file says for *value*."""
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def test_every_field_round_trips_from_its_yaml_form_and_refuses_a_bad_value() -> None:
    """Each Settings field is coerced by its real type hint: its default, written as YAML,
    loads back to itself; a value of the wrong type is refused naming the key."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(Settings)
    defaults = Settings.from_mapping({"cadir": "/tmp/ca", "certname": "ca.test"})
    for f in dataclasses.fields(Settings):
        hint = hints[f.name]
        assert hint in _BAD_BY_TYPE, f"{f.name}: no coercion test for {hint}"
        default = getattr(defaults, f.name)
        raw = {"cadir": "/tmp/ca", "certname": "ca.test", f.name: _yaml_form(default)}
        assert getattr(Settings.from_mapping(raw), f.name) == default, f.name
        with pytest.raises(ConfigError, match=rf"^{f.name}: "):
            Settings.from_mapping({**raw, f.name: _BAD_BY_TYPE[hint]})


def test_coercion_takes_real_types_not_their_spelling() -> None:
    """``_coerce`` works from the type objects, however the annotation was written."""
    import datetime
    import typing

    from splitca.config import _coerce

    assert _coerce("k", datetime.timedelta | None, None) is None
    assert _coerce("k", typing.Optional[datetime.timedelta], "2h") == dt.timedelta(hours=2)  # noqa: UP045
    assert _coerce("k", typing.Union[bool, str], "registry") == "registry"  # noqa: UP007
    assert _coerce("k", tuple[str, ...], "a, b") == ("a", "b")
    assert _coerce("k", Path | None, "/x") == Path("/x")
    with pytest.raises(ConfigError, match=r"^k: expected true, false, registry or a path"):
        _coerce("k", bool | str, 1.5)
