"""The pipelined neuron update datapath: steps 1-7 of ``docs/neuron.md``, one neuron per clock.

Spec: ``docs/neuron.md`` (integer semantics), ``docs/core.md`` (pipeline stages).  Bit-exact with
:func:`spikeforge.sim.golden.neuron_update` in integer mode.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

__all__ = ["NeuronDatapath"]


class NeuronDatapath(wiring.Component):
    """One neuron update per clock, :attr:`LATENCY` clocks from input to output.

    Parameters
    ----------
    fmt : Format
        Integer widths.
    tag_bits : int
        Width of ``i_tag`` / ``o_tag`` (the neuron index travelling alongside).

    Attributes
    ----------
    i_valid, i_tag, i_v, i_i, i_acc, i_thr, i_bias : In
        One neuron's state (``v``, ``i``, ``acc``) and parameters (threshold, bias).
    model, leak, reset, reset_delay, beta, alpha : In
        Population options; must hold still while a neuron of the population is in flight.
    o_valid, o_tag, o_v, o_i, o_spike : Out
        The neuron's new membrane and current and its spike, :attr:`LATENCY` clocks later.
    """

    LATENCY = 6

    def __init__(self, fmt: Format = DEFAULT_FORMAT, tag_bits: int = 16):
        self.fmt = fmt
        sb = fmt.state_bits
        super().__init__(
            {
                "i_valid": In(1),
                "i_tag": In(tag_bits),
                "i_v": In(signed(sb)),
                "i_i": In(signed(sb)),
                "i_acc": In(signed(fmt.acc_bits)),
                "i_thr": In(unsigned(fmt.threshold_bits)),
                "i_bias": In(signed(fmt.bias_bits)),
                "model": In(NeuronModel),
                "leak": In(LeakMode),
                "reset": In(ResetMode),
                "reset_delay": In(1),
                "beta": In(unsigned(fmt.decay_bits)),
                "alpha": In(unsigned(fmt.decay_bits)),
                "o_valid": Out(1),
                "o_tag": Out(tag_bits),
                "o_v": Out(signed(sb)),
                "o_i": Out(signed(sb)),
                "o_spike": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        sb = fmt.state_bits
        lo, hi = fmt.state_range
        frac = fmt.decay_frac_bits
        tb = fmt.threshold_bits + 1  # threshold as a signed value
        xb = max(fmt.acc_bits, fmt.bias_bits) + 1

        def sat(x):
            # in range iff the bits from sb-1 up are all equal: no comparator carry chain
            top = x[sb - 1 :]
            fits = (top == 0) | (top == (1 << len(top)) - 1)
            low, high = Const(lo, signed(sb)), Const(hi, signed(sb))
            return Mux(fits, x[:sb].as_signed(), Mux(x[-1], low, high))

        def stage(name, shape, value):
            # Only the valid bits need a reset: a data register without one costs nothing on
            # its own, and lets Yosys put the multipliers' product registers into the DSPs.
            reg = Signal(shape, name=name, reset_less=not name.endswith("_valid"))
            m.d.sync += reg.eq(value)
            return reg

        cuba = self.model == NeuronModel.CUBA

        # --- the inputs (registered by the caller: the core registers the state memories'
        # address, so the block RAM outputs feed stage A directly) --------------------------
        r_valid = self.i_valid
        r_tag = self.i_tag
        r_v = self.i_v
        r_i = self.i_i
        r_acc = self.i_acc
        r_thr = self.i_thr
        r_bias = self.i_bias

        # --- A: reset owed, input, decay products ---------------------------------------------
        a_valid = stage("a_valid", 1, r_valid)
        a_tag = stage("a_tag", len(r_tag), r_tag)
        thr_s = Cat(r_thr, Const(0, 1)).as_signed()
        a_thr = stage("a_thr", signed(tb), thr_s)
        a_r = stage("a_r", 1, r_v > thr_s)
        a_x = stage("a_x", signed(xb), r_acc + r_bias)
        a_v = stage("a_v", signed(sb), r_v)
        a_i = stage("a_i", signed(sb), r_i)
        pb = sb + fmt.decay_bits + 1
        a_pv = stage("a_pv", signed(pb), r_v * self.beta)
        a_pi = stage("a_pi", signed(pb), r_i * self.alpha)
        # shift leak: k is in 1 .. state_bits-1 (a population with another code is not run)
        kb = (sb - 1).bit_length()
        a_sv = stage("a_sv", signed(sb), r_v >> self.beta[:kb])
        a_si = stage("a_si", signed(sb), r_i >> self.alpha[:kb])

        # --- B: decay ----------------------------------------------------------------------
        def decay(x, p, shifted):
            # p >> F rounded toward zero: add 2**F - 1 to a negative p, then floor-shift
            mult = (p + Mux(p[-1], (1 << frac) - 1, 0)) >> frac
            shift = x - shifted
            return Mux(
                self.leak == LeakMode.MULT, mult, Mux(self.leak == LeakMode.SHIFT, shift, x)
            )

        b_valid = stage("b_valid", 1, a_valid)
        b_tag = stage("b_tag", len(a_tag), a_tag)
        b_thr = stage("b_thr", signed(tb), a_thr)
        b_r = stage("b_r", 1, a_r)
        b_x = stage("b_x", signed(xb), a_x)
        b_i = stage("b_i", signed(sb), a_i)
        b_dv = stage("b_dv", signed(sb + 1), decay(a_v, a_pv, a_sv))
        b_di = stage("b_di", signed(sb + 1), decay(a_i, a_pi, a_si))

        # --- C: synaptic current; the membrane term before the input ------------------------
        i_new = sat(b_di + b_x)
        zero_r = (self.reset == ResetMode.ZERO) & b_r
        sub_r = (self.reset == ResetMode.SUBTRACT) & b_r
        c_valid = stage("c_valid", 1, b_valid)
        c_tag = stage("c_tag", len(b_tag), b_tag)
        c_thr = stage("c_thr", signed(tb), b_thr)
        c_r = stage("c_r", 1, b_r)
        c_inew = stage("c_inew", signed(sb), Mux(cuba, i_new, b_i))
        c_cur = stage("c_cur", signed(xb + 1), Mux(cuba, i_new, b_x))
        c_a = stage("c_a", signed(max(sb, tb) + 2), Mux(zero_r, 0, b_dv) - Mux(sub_r, b_thr, 0))
        c_kill = stage("c_kill", 1, cuba & zero_r)

        # --- D: state function, saturate ---------------------------------------------------
        u = Mux(c_kill, 0, sat(c_a + c_cur))
        q_valid = stage("q_valid", 1, c_valid)
        q_tag = stage("q_tag", len(c_tag), c_tag)
        q_thr = stage("q_thr", signed(tb), c_thr)
        q_r = stage("q_r", 1, c_r)
        q_i = stage("q_i", signed(sb), c_inew)
        q_u = stage("q_u", signed(sb), u)

        # --- E: threshold (strict) ----------------------------------------------------------
        d_valid = stage("d_valid", 1, q_valid)
        d_tag = stage("d_tag", len(q_tag), q_tag)
        d_r = stage("d_r", 1, q_r)
        d_i = stage("d_i", signed(sb), q_i)
        d_u = stage("d_u", signed(sb), q_u)
        d_s = stage("d_s", 1, q_u > q_thr)
        d_um = stage("d_um", signed(max(sb, tb) + 1), q_u - q_thr)  # the subtract reset's
        d_up = stage("d_up", signed(max(sb, tb) + 1), q_u + q_thr)  # two candidates

        # --- F: immediate reset (reset_delay = false) -------------------------------------
        up = d_s & ~d_r  # S - R = +1
        down = ~d_s & d_r  # S - R = -1
        imm = Signal(signed(sb))
        with m.If(self.reset_delay | (self.reset == ResetMode.NONE)):
            m.d.comb += imm.eq(d_u)
        with m.Elif(self.reset == ResetMode.SUBTRACT):
            m.d.comb += imm.eq(Mux(up, sat(d_um), Mux(down, sat(d_up), d_u)))
        with m.Else():  # zero: u - (S - R) * u
            m.d.comb += imm.eq(Mux(up, 0, Mux(down, sat(d_u << 1), d_u)))
        m.d.sync += [
            self.o_valid.eq(d_valid),
            self.o_tag.eq(d_tag),
            self.o_v.eq(imm),
            self.o_i.eq(d_i),
            self.o_spike.eq(d_s & d_valid),
        ]
        return m
