"""PLLs for the boards: divider search (as ``icepll`` / ``ecppll`` do it) and the clock generators.

Spec: the iCE40 sysCLOCK PLL (Lattice TN1251, ``SB_PLL40_*``) and the ECP5 sysCLOCK PLL (Lattice
TN1263, ``EHXPLLL``).  The divider searches reproduce the open tools that everyone checks against:

* :func:`ice40_pll_params` is the search of ``icepll`` (Project IceStorm): same loop order, same
  ranges (PFD 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz), same choice among equally
  good settings, same ``FILTER_RANGE`` rule, so it gives ``icepll``'s answer for every request.
* :func:`ecp5_pll_params` is the search of ``ecppll`` (Project Trellis), done in single precision
  as the C++ tool does it (PFD >= 3.125 MHz, VCO 400..800 MHz, the VCO nearest 600 MHz wins a tie),
  including the primary output's coarse phase ``CLKOP_CPHASE`` that ``ecppll`` writes.

The *achieved* frequency (``f_out_mhz``) is what the board top gives the chip as its clock
frequency, so the UART divisor is computed from the clock the board really runs at.
"""

from dataclasses import dataclass

import numpy as np
from amaranth import Const, Elaboratable, Instance, Module, Signal

from ..errors import ConfigError

__all__ = [
    "ICE40PLLParams",
    "ECP5PLLParams",
    "ice40_pll_params",
    "ecp5_pll_params",
    "ICE40PLL",
    "ECP5PLL",
]


# --- iCE40 --------------------------------------------------------------------------------------

ICE40_F_IN_RANGE = (10.0, 133.0)
ICE40_F_OUT_RANGE = (16.0, 275.0)
ICE40_F_PFD_RANGE = (10.0, 133.0)
ICE40_F_VCO_RANGE = (533.0, 1066.0)


@dataclass(frozen=True)
class ICE40PLLParams:
    """Settings of an iCE40 ``SB_PLL40_*`` for one input and one requested output frequency.

    Attributes
    ----------
    f_in_mhz, f_req_mhz : float
        Reference (oscillator) frequency and requested output frequency, in MHz.
    divr, divf, divq, filter_range : int
        The primitive's ``DIVR`` (0..15), ``DIVF`` (0..127), ``DIVQ`` (1..6) and ``FILTER_RANGE``.
    simple_feedback : bool
        ``FEEDBACK_PATH="SIMPLE"`` (the VCO is divided by ``2**DIVQ`` after the feedback tap).
    f_pfd_mhz, f_vco_mhz, f_out_mhz : float
        Phase-detector, VCO and achieved output frequency.
    """

    f_in_mhz: float
    f_req_mhz: float
    divr: int
    divf: int
    divq: int
    filter_range: int
    simple_feedback: bool
    f_pfd_mhz: float
    f_vco_mhz: float
    f_out_mhz: float



def _check_mhz(family, kind, arg, value, bounds):
    """Refuse a PLL ``kind`` ("input" / "output") frequency outside ``bounds`` (MHz)."""
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ConfigError(
            f"{family} PLL {kind} frequency {arg}={value:g} is outside the range "
            f"{lo:g}..{hi:g} MHz"
        )

def ice40_pll_params(f_in_mhz, f_out_mhz, *, simple_feedback=True):
    """Find the ``SB_PLL40`` dividers that bring ``f_in_mhz`` nearest to ``f_out_mhz``.

    The same search as ``icepll -i F_IN -o F_OUT`` (``-S`` for ``simple_feedback=False``).

    Parameters
    ----------
    f_in_mhz : float
        Reference frequency, 10..133 MHz.
    f_out_mhz : float
        Requested output frequency, 16..275 MHz.
    simple_feedback : bool
        Use the simple feedback path (what the ``ICE40PLL`` clock generator instantiates).

    Returns
    -------
    ICE40PLLParams

    Raises
    ------
    ConfigError
        A frequency is out of the PLL's range, or no setting exists.
    """
    f_in = float(f_in_mhz)
    f_req = float(f_out_mhz)
    _check_mhz("iCE40", "input", "f_in_mhz", f_in, ICE40_F_IN_RANGE)
    _check_mhz("iCE40", "output", "f_out_mhz", f_req, ICE40_F_OUT_RANGE)
    best = None  # (f_out, divr, divf, divq)
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if f_pfd < ICE40_F_PFD_RANGE[0] or f_pfd > ICE40_F_PFD_RANGE[1]:
            continue
        for divf in range(128):
            if simple_feedback:
                f_vco = f_pfd * (divf + 1)
                if f_vco < ICE40_F_VCO_RANGE[0] or f_vco > ICE40_F_VCO_RANGE[1]:
                    continue
                for divq in range(1, 7):
                    f_out = f_vco * 2.0**-divq
                    if best is None or abs(f_out - f_req) < abs(best[0] - f_req):
                        best = (f_out, divr, divf, divq)
            else:
                for divq in range(1, 7):
                    f_vco = f_pfd * (divf + 1) * 2.0**divq
                    if f_vco < ICE40_F_VCO_RANGE[0] or f_vco > ICE40_F_VCO_RANGE[1]:
                        continue
                    f_out = f_vco * 2.0**-divq
                    if best is None or abs(f_out - f_req) < abs(best[0] - f_req):
                        best = (f_out, divr, divf, divq)
    if best is None:
        raise ConfigError(f"no iCE40 PLL setting gives f_out_mhz={f_req:g} from f_in_mhz={f_in:g}")
    f_out, divr, divf, divq = best
    f_pfd = f_in / (divr + 1)
    f_vco = f_pfd * (divf + 1) * (1 if simple_feedback else 2**divq)
    filter_range = next(
        (i + 1 for i, limit in enumerate((17, 26, 44, 66, 101)) if f_pfd < limit), 6
    )
    return ICE40PLLParams(
        f_in_mhz=f_in,
        f_req_mhz=f_req,
        divr=divr,
        divf=divf,
        divq=divq,
        filter_range=filter_range,
        simple_feedback=simple_feedback,
        f_pfd_mhz=f_pfd,
        f_vco_mhz=f_vco,
        f_out_mhz=f_out,
    )


class ICE40PLL(Elaboratable):
    """An iCE40 PLL in simple feedback mode, fed from a clock pad or from a fabric/global clock.

    Parameters
    ----------
    params : ICE40PLLParams
        From :func:`ice40_pll_params` (``simple_feedback=True``).
    pad : io port, optional
        The oscillator's package pin (``platform.request(name, dir="-")``): instantiates
        ``SB_PLL40_PAD``, which takes its reference straight from the pad.
    clk_in : Value, optional
        A reference clock from the fabric (exactly one of ``pad`` and ``clk_in``):
        instantiates ``SB_PLL40_CORE``.

    Attributes
    ----------
    clk_out : Signal
        The output clock (the PLL's global output ``PLLOUTGLOBAL``).
    locked : Signal
        The PLL's ``LOCK`` output; hold the design in reset while it is low.
    """

    def __init__(self, params, *, pad=None, clk_in=None):
        if not isinstance(params, ICE40PLLParams):
            raise ConfigError(f"params must be an ICE40PLLParams, not {params!r}")
        if not params.simple_feedback:
            raise ConfigError("ICE40PLL instantiates the SIMPLE feedback path only")
        if (pad is None) == (clk_in is None):
            raise ConfigError("ICE40PLL needs exactly one of pad= and clk_in=")
        self.params = params
        self.pad = pad
        self.clk_in = clk_in
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        p = self.params
        ports = dict(
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(p.divr, 4),
            p_DIVF=Const(p.divf, 7),
            p_DIVQ=Const(p.divq, 3),
            p_FILTER_RANGE=Const(p.filter_range, 3),
            i_RESETB=Const(1),
            i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=self.clk_out,
            o_LOCK=self.locked,
        )
        if self.pad is not None:
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_PLLOUT_SELECT="GENCLK", i_PACKAGEPIN=self.pad.io, **ports
            )
        else:
            m.submodules.pll = Instance(
                "SB_PLL40_CORE", p_PLLOUT_SELECT="GENCLK", i_REFERENCECLK=self.clk_in, **ports
            )
        return m


# --- ECP5 ---------------------------------------------------------------------------------------

ECP5_F_IN_RANGE = (8.0, 400.0)
ECP5_F_OUT_RANGE = (10.0, 400.0)
ECP5_F_PFD_RANGE = (3.125, 400.0)
ECP5_F_VCO_RANGE = (400.0, 800.0)


@dataclass(frozen=True)
class ECP5PLLParams:
    """Settings of an ECP5 ``EHXPLLL`` (feedback from ``CLKOP``) for one requested output.

    Attributes
    ----------
    f_in_mhz, f_req_mhz : float
        Reference (oscillator) frequency and requested output frequency, in MHz.
    clki_div, clkfb_div, clkop_div : int
        ``CLKI_DIV`` (1..128), ``CLKFB_DIV`` (1..80), ``CLKOP_DIV`` (1..128).
    clkop_cphase : int
        ``CLKOP_CPHASE`` as ``ecppll`` writes it.
    f_vco_mhz, f_out_mhz : float
        VCO and achieved output frequency.
    """

    f_in_mhz: float
    f_req_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    f_vco_mhz: float
    f_out_mhz: float


def ecp5_pll_params(f_in_mhz, f_out_mhz):
    """Find the ``EHXPLLL`` dividers that bring ``f_in_mhz`` nearest to ``f_out_mhz``.

    The same search as ``ecppll -i F_IN -o F_OUT``, in single precision like the tool: the
    smallest error wins, then the VCO nearest 600 MHz, then the first in the order
    ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``.

    Parameters
    ----------
    f_in_mhz : float
        Reference frequency, 8..400 MHz.
    f_out_mhz : float
        Requested output frequency, 10..400 MHz.

    Returns
    -------
    ECP5PLLParams

    Raises
    ------
    ConfigError
        A frequency is out of the PLL's range, or no setting exists.
    """
    f_in_d = float(f_in_mhz)
    f_req_d = float(f_out_mhz)
    _check_mhz("ECP5", "input", "f_in_mhz", f_in_d, ECP5_F_IN_RANGE)
    _check_mhz("ECP5", "output", "f_out_mhz", f_req_d, ECP5_F_OUT_RANGE)
    f32 = np.float32
    f_in = f32(f_in_d)
    f_req = f32(f_req_d)
    in_div = np.arange(1, 129, dtype=np.float32)
    fb_div = np.arange(1, 81, dtype=np.float32)
    out_div = np.arange(1, 129, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        f_pfd = f_in / in_div  # float32, like `input / (float)input_div`
        # fvco = fpfd * (float)feedback_div * (float)output_div, evaluated left to right.
        f_vco = (f_pfd[:, None, None] * fb_div[None, :, None]) * out_div[None, None, :]
        f_out = f_vco / out_div[None, None, :]
        ok = (
            ((f_pfd >= f32(ECP5_F_PFD_RANGE[0])) & (f_pfd <= f32(ECP5_F_PFD_RANGE[1])))[
                :, None, None
            ]
            & (f_vco >= f32(ECP5_F_VCO_RANGE[0]))
            & (f_vco <= f32(ECP5_F_VCO_RANGE[1]))
        )
        err = np.where(ok, np.abs(f_out - f_req), np.float32(np.inf))
    best_err = err.min()
    if not np.isfinite(best_err):
        raise ConfigError(
            f"no ECP5 PLL setting gives f_out_mhz={f_req_d:g} from f_in_mhz={f_in_d:g}"
        )
    cands = np.flatnonzero(err.ravel() == best_err)  # in the tool's loop order
    dist = np.abs(f_vco.ravel()[cands] - f32(600))
    flat = int(cands[int(np.argmin(dist))])  # first of the nearest-to-600 MHz
    i, j, k = np.unravel_index(flat, err.shape)
    fout = f_out[i, j, k]
    fvco = f_vco[i, j, k]
    # ecppll: `float ns_phase = 1/(fout * 1e6) * 0.5; cphase = ns_phase * (fvco * 1e6);`
    ns_phase = np.float32(1.0 / (float(fout) * 1e6) * 0.5)
    cphase = int(float(ns_phase) * (float(fvco) * 1e6))
    return ECP5PLLParams(
        f_in_mhz=f_in_d,
        f_req_mhz=f_req_d,
        clki_div=int(i) + 1,
        clkfb_div=int(j) + 1,
        clkop_div=int(k) + 1,
        clkop_cphase=cphase,
        f_vco_mhz=float(fvco),
        f_out_mhz=float(fout),
    )


class ECP5PLL(Elaboratable):
    """An ECP5 ``EHXPLLL`` with feedback from its primary output ``CLKOP``.

    Parameters
    ----------
    params : ECP5PLLParams
        From :func:`ecp5_pll_params`.
    clk_in : Value
        The reference clock (the oscillator input buffer's output).

    Attributes
    ----------
    clk_out : Signal
        The output clock (``CLKOP``).
    locked : Signal
        The PLL's ``LOCK`` output; hold the design in reset while it is low.
    """

    def __init__(self, params, *, clk_in):
        if not isinstance(params, ECP5PLLParams):
            raise ConfigError(f"params must be an ECP5PLLParams, not {params!r}")
        self.params = params
        self.clk_in = clk_in
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.f_out_mhz:.6g}",
            a_ICP_CURRENT="12",
            a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div,
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_cphase,
            p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=p.clkfb_div,
            i_RST=Const(0),
            i_STDBY=Const(0),
            i_CLKI=self.clk_in,
            o_CLKOP=self.clk_out,
            i_CLKFB=self.clk_out,
            i_PHASESEL0=Const(0),
            i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_LOCK=self.locked,
        )
        return m
