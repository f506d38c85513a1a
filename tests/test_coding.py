# Tests of spike coding (host/coding.py): rate, latency and delta encoders, AER conversion and
# the spike-count / first-spike / membrane decoders.
import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.host.coding import (
    delta_encode,
    events_to_raster,
    first_spike,
    latency_encode,
    membrane_readout,
    predict,
    raster_to_events,
    rate_encode,
    spike_count,
)


def test_rate_encode_shape_rate_and_seed():
    x = np.array([[0.0, 0.25, 0.5, 1.0]] * 50)
    r = rate_encode(x, 400, seed=3)
    assert r.shape == (400, 50, 4) and r.dtype == np.uint8
    rates = r.mean(axis=(0, 1))
    np.testing.assert_allclose(rates, [0, 0.25, 0.5, 1.0], atol=0.01)
    np.testing.assert_array_equal(r, rate_encode(x, 400, seed=3))
    assert not np.array_equal(r, rate_encode(x, 400, seed=4))


def test_rate_encode_x_max_and_range_errors():
    r = rate_encode([0, 16], 10, seed=0, x_max=16)
    assert r.shape == (10, 1, 2) and r[:, 0, 1].all() and not r[:, 0, 0].any()
    with pytest.raises(ConfigError, match="intensity 2.0 is out of range: allowed 0..1"):
        rate_encode([2.0], 5)
    with pytest.raises(ConfigError, match="timesteps=0"):
        rate_encode([0.5], 0)
    with pytest.raises(ConfigError, match="x_max=-1"):
        rate_encode([0.5], 3, x_max=-1)


def test_latency_encode_one_spike_earlier_for_larger():
    x = np.array([[1.0, 0.5, 0.2, 0.0]])
    r = latency_encode(x, 11)
    assert r.shape == (11, 1, 4)
    np.testing.assert_array_equal(r.sum(axis=0)[0], [1, 1, 1, 0])
    t = first_spike(r)[0]
    np.testing.assert_array_equal(t, [0, 5, 8, 11])
    rc = latency_encode(x, 11, linear=False)
    tc = first_spike(rc)[0]
    assert tc[0] <= tc[1] <= tc[2] and tc[3] == 11


def test_delta_encode_on_off():
    sig = np.array([0.0, 0.05, 0.3, 0.3, 0.0, 0.1])[:, None]
    r = delta_encode(sig, 0.2)
    assert r.shape == (6, 1, 2)
    np.testing.assert_array_equal(r[:, 0, 0], [0, 0, 1, 0, 0, 0])  # ON at the rise
    np.testing.assert_array_equal(r[:, 0, 1], [0, 0, 0, 0, 1, 0])  # OFF at the fall
    on_only = delta_encode(sig, 0.2, off_spikes=False)
    assert on_only.shape == (6, 1, 1) and on_only.sum() == 1
    with pytest.raises(ConfigError, match="threshold=0"):
        delta_encode(sig, 0)


def test_events_roundtrip():
    r = np.array([[0, 1, 0], [2, 0, 1], [0, 0, 0]])
    ev = raster_to_events(r)
    assert ev == [[1], [0, 0, 2], []]
    np.testing.assert_array_equal(events_to_raster(ev, 3), r)
    assert raster_to_events(r[:, None, :]) == ev
    with pytest.raises(ConfigError, match="address 3 is out of range: allowed 0..2"):
        events_to_raster([[3]], 3)
    with pytest.raises(ConfigError, match="one sample"):
        raster_to_events(np.zeros((2, 2, 3)))


def test_decoders():
    s = np.zeros((5, 2, 3), dtype=bool)
    s[[0, 2, 4], 0, 1] = True  # sample 0: neuron 1 spikes 3 times
    s[3, 0, 2] = True
    s[1, 1, 0] = True  # sample 1: neurons 0 and 2 both spike once, 0 earlier
    s[4, 1, 2] = True
    np.testing.assert_array_equal(spike_count(s), [[0, 3, 1], [1, 0, 1]])
    np.testing.assert_array_equal(first_spike(s), [[5, 0, 3], [1, 5, 4]])
    np.testing.assert_array_equal(predict("count", spikes=s), [1, 0])  # tie -> earlier spike
    np.testing.assert_array_equal(predict("first", spikes=s), [1, 0])
    v = np.zeros((4, 1, 3))
    v[2, 0, 2] = 30
    v[3, 0, 0] = 20
    np.testing.assert_array_equal(membrane_readout(v, scale=10.0), [[2.0, 0, 3.0]])
    np.testing.assert_array_equal(membrane_readout(v, reduce="last"), [[20.0, 0, 0]])
    assert predict("membrane", v=v)[0] == 2
    with pytest.raises(ConfigError, match="decoder='vote'"):
        predict("vote", spikes=s)
    with pytest.raises(ConfigError, match="needs the membrane"):
        predict("membrane", spikes=s)
