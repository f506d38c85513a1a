"""Tests of spikeforge/spec.py (numeric formats) and of the package layout."""

import dataclasses
import json
import subprocess
import sys

import pytest

from spikeforge.errors import ConfigError
from spikeforge.spec import DEFAULT_FORMAT, Format, LeakMode, ResetMode, signed_range


def test_default_widths_are_the_documented_ones():
    assert dataclasses.asdict(DEFAULT_FORMAT) == {
        "weight_bits": 8,
        "state_bits": 16,
        "acc_bits": 20,
        "threshold_bits": 16,
        "bias_bits": 16,
        "decay_frac_bits": 12,
    }
    assert DEFAULT_FORMAT.weight_range == (-128, 127)
    assert DEFAULT_FORMAT.state_range == (-32768, 32767)
    assert DEFAULT_FORMAT.threshold_range == (1, 32767)
    assert DEFAULT_FORMAT.decay_range == (0, 4096)
    assert DEFAULT_FORMAT.shift_range == (1, 15)
    assert signed_range(20) == (-(2**19), 2**19 - 1)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"weight_bits": 1}, ["weight_bits=1", "2..16"]),
        ({"state_bits": 40}, ["state_bits=40", "4..32"]),
        ({"acc_bits": 12}, ["acc_bits=12", "16..40"]),
        ({"threshold_bits": 17}, ["threshold_bits=17", "state_bits=16"]),
        ({"bias_bits": 24}, ["bias_bits=24", "acc_bits=20"]),
        ({"decay_frac_bits": 0}, ["decay_frac_bits=0", "1..16"]),
        ({"state_bits": 32, "acc_bits": 40, "decay_frac_bits": 16, "threshold_bits": 16},
         None),
    ],
)
def test_format_validation_names_parameter_value_and_range(kwargs, words):
    if words is None:
        Format(**kwargs)  # a valid wide format
        return
    with pytest.raises(ConfigError) as exc:
        Format(**kwargs)
    for w in words:
        assert w in str(exc.value)


def test_option_codes_fit_their_shapes():
    assert {m.value for m in ResetMode} == {0, 1, 2}
    assert {m.value for m in LeakMode} == {0, 1, 2}


def test_cli_info_json():
    out = subprocess.run(
        [sys.executable, "-m", "spikeforge", "info", "--json"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert data["format"]["weight_bits"] == 8
    assert data["formats"]["WIDE_FORMAT"]["state_bits"] == 24
    assert data["boards"]["ulx3s-85f-wide"] == {"format": "WIDE_FORMAT", "max_delay": 7,
                                                "neurons": 4096, "conv_words": 0}
    assert data["boards"]["icebreaker"] == {"format": "DEFAULT_FORMAT", "max_delay": 0,
                                            "neurons": 1024, "conv_words": 0}
    conv = data["boards"]["ulx3s-85f-conv"]
    assert conv["neurons"] >= 9000 and conv["conv_words"] > 0


def test_subpackages_import_under_one_namespace():
    import spikeforge.boards
    import spikeforge.host
    import spikeforge.hw
    import spikeforge.sim

    for mod in (spikeforge.hw, spikeforge.host, spikeforge.sim, spikeforge.boards):
        assert mod.__name__.startswith("spikeforge.")
