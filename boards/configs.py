"""The board registry: every board spikeforge builds for, and the chip each one carries.

Spec: ``docs/boards.md``.  A :class:`Board` is plain data: where its Amaranth platform lives, its
FPGA, oscillator, UART and programmer, and a :class:`ChipParams` that sizes the chip for that
FPGA (:meth:`ChipParams.to_core_config` maps it to ``spikeforge.hw.image.CoreConfig``, the
only place the two are translated).  Nothing here imports ``amaranth_boards`` until a platform
is asked for, so the registry loads without the ``[boards]`` extra.
"""

import importlib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import ConfigError
from ..protocol import DEFAULT_BAUD
from ..spec import DEFAULT_FORMAT, WIDE_FORMAT, Format

__all__ = ["ChipParams", "Board", "BOARDS", "get_board", "board_names", "default_out_dir"]


@dataclass(frozen=True)
class ChipParams:
    """How big a chip a board carries, as plain data.

    Attributes
    ----------
    neurons : int
        Neurons in the core (all populations together).
    inputs : int
        Input (axon) addresses the host can send spikes to.
    populations : int
        Populations (layers) the core can hold.
    synapses : int
        Synaptic weights (of ``fmt.weight_bits`` bits) in the weight memory (the core's
        ``synapse_words`` are these divided by its ``weights_per_word``, see
        :meth:`to_core_config`).
    lanes : int
        Synapses accumulated per clock cycle: 1, 2 or 4 (``CoreConfig.lanes``).
    clock_mhz : float
        Target core clock in MHz (the PLL's requested output).
    baud : int
        UART baud rate of the host link.
    per_neuron_threshold : bool
        One threshold per neuron (a memory word each) or one per population.
    weight_banks : int
        The core's weight memory in this many output-registered banks (a long block-RAM
        cascade is the slowest path on the ECP5; ``spikeforge.hw.core.NeuronCore``).
    fast : bool
        The fast build of the core and the link (every block-RAM output registered, registered
        sequencer branches and bus decode; ``spikeforge.hw.core.NeuronCore``): a few hundred
        more flip-flops, a few clocks more per population.
    rx_window : int
        Bytes of the link's receive ring (a power of two, at least ``MAX_FRAME``): how many
        request bytes the host may keep in flight (``docs/protocol.md``, flow control).
    encoders : bool
        The link executes SAMPLE: the chip generates a sample's input spikes from its
        intensities and counts the output spikes (``docs/encoding.md``).  Reported by IDENTIFY;
        the host encodes on the host on a chip without them.
    max_delay : int
        The longest synaptic delay the core delivers, in timesteps (``CoreConfig.max_delay``,
        ``docs/network.md``, "Synaptic delays"); 0: no delays.  Reported by IDENTIFY.
    conv_words : int
        Words of the core's table of weight-shared blocks (``CoreConfig.conv_words``, one per
        source of a convolution; ``docs/core.md``, "Weight-shared blocks"); 0: convolutions
        are unrolled into dense blocks.  Reported by IDENTIFY.
    fmt : Format
        The number format (``spikeforge.spec``: ``DEFAULT_FORMAT``, 8-bit weights and 16-bit
        state, or ``WIDE_FORMAT``, 16-bit weights and 24-bit state; ``docs/neuron.md``).
        Reported by IDENTIFY; the compiler quantizes for it.
    """

    neurons: int
    inputs: int
    populations: int
    synapses: int
    lanes: int
    clock_mhz: float
    baud: int
    per_neuron_threshold: bool = True
    weight_banks: int = 1
    fast: bool = False
    rx_window: int = 1024
    encoders: bool = False
    fmt: Format = DEFAULT_FORMAT
    max_delay: int = 0
    conv_words: int = 0

    def __post_init__(self):
        for name in ("neurons", "inputs", "populations", "synapses", "lanes", "baud",
                     "weight_banks", "rx_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ChipParams.{name}={value!r} must be a positive integer")
        for name in ("per_neuron_threshold", "fast", "encoders"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ChipParams.{name}={getattr(self, name)!r} must be a bool")
        if not isinstance(self.clock_mhz, (int, float)) or not 1 <= self.clock_mhz <= 500:
            raise ConfigError(f"ChipParams.clock_mhz={self.clock_mhz!r} must be in 1..500 MHz")
        if not isinstance(self.fmt, Format):
            raise ConfigError(f"ChipParams.fmt={self.fmt!r} must be a spikeforge.spec.Format")
        if isinstance(self.max_delay, bool) or not isinstance(self.max_delay, int) or not (
            0 <= self.max_delay <= 14
        ):
            raise ConfigError(f"ChipParams.max_delay={self.max_delay!r} must be in 0..14 steps")
        if isinstance(self.conv_words, bool) or not isinstance(self.conv_words, int) or not (
            0 <= self.conv_words <= 1 << 16
        ):
            raise ConfigError(f"ChipParams.conv_words={self.conv_words!r} must be in 0..65536")

    def core_options(self):
        """The core's timing options (:class:`~spikeforge.hw.core.CoreOptions`)."""
        from ..hw.core import CoreOptions

        return CoreOptions(fast=self.fast, weight_banks=self.weight_banks)

    def as_dict(self):
        """The fields as a ``dict`` (what the build report and the CoreConfig mapping read);
        ``fmt`` as a ``dict`` of its widths, so the whole is JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["fmt"] = {f.name: getattr(self.fmt, f.name) for f in fields(self.fmt)}
        return out

    def to_core_config(self, **overrides):
        """The ``spikeforge.hw.image.CoreConfig`` of this chip: the one translation of these
        fields to the gateware's names (``neurons`` -> ``n_neurons``, ...).

        ``synapse_words`` holds at least ``synapses`` weights: ``synapses`` divided (rounded
        up) by the ``weights_per_word`` of the configuration itself (``max(2, lanes)`` weights
        per word), so the weights-per-word rule lives only in ``CoreConfig``.

        Parameters
        ----------
        **overrides
            Other ``CoreConfig`` arguments (``descriptors``, ``fmt``).
        """
        from ..hw.image import CoreConfig

        sized = CoreConfig(
            n_neurons=self.neurons,
            n_inputs=self.inputs,
            n_populations=self.populations,
            synapse_words=1,  # replaced below, once the configuration says its word size
            lanes=self.lanes,
            per_neuron_threshold=self.per_neuron_threshold,
            **{"fmt": self.fmt, "max_delay": self.max_delay, "conv_words": self.conv_words,
               **overrides},
        )
        return replace(sized, synapse_words=-(-self.synapses // sized.weights_per_word))


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Attributes
    ----------
    name : str
        Registry key, used on the command line (``spikeforge build --board NAME``).
    title : str
        Human-readable name.
    platform : str
        ``"module:Class"`` of the ``amaranth_boards`` platform.
    family : str
        ``"ice40"`` or ``"ecp5"``: selects the PLL, the toolchain and the report fields.
    device : str
        The FPGA part (for the docs and the report).
    osc_mhz : float
        Frequency of the board oscillator that feeds the PLL.
    clock_resource : str
        Platform resource of that oscillator.
    uart_resource : str
        Platform resource of the host UART (pins ``rx`` / ``tx``).
    usb_uart : str
        The USB-UART bridge, and the highest baud rate it is known to carry.
    chip : ChipParams
        The chip this board carries.
    openfpgaloader_board : str or None
        ``openFPGALoader -b`` name; ``None`` when openFPGALoader cannot program the board.
    alt_programmer : tuple of str
        Another programmer command (the bitstream path is appended), tried when openFPGALoader is
        absent (e.g. ``("iceprog",)``).
    bitstream_ext : str
        ``"bin"`` (iCE40) or ``"bit"`` (ECP5).
    synth_opts : tuple of str
        Extra options for Yosys ``synth_<family>`` (e.g. ``-dsp``).
    nextpnr_opts : tuple of str
        Extra options for nextpnr.
    notes : str
        Anything a user must know (jumpers, UART limits, ...).
    """

    name: str
    title: str
    platform: str
    family: str
    device: str
    osc_mhz: float
    clock_resource: str
    uart_resource: str
    usb_uart: str
    chip: ChipParams
    openfpgaloader_board: str | None
    alt_programmer: tuple = ()
    bitstream_ext: str = "bin"
    synth_opts: tuple = ()
    nextpnr_opts: tuple = ()
    notes: str = ""

    def __post_init__(self):
        if self.family not in ("ice40", "ecp5"):
            raise ConfigError(
                f"Board.family={self.family!r} of board {self.name!r} must be 'ice40' or 'ecp5'"
            )

    def platform_class(self):
        """Import and return the ``amaranth_boards`` platform class.

        Raises
        ------
        ConfigError
            ``amaranth-boards`` is not installed (it comes with ``spikeforge[boards]``).
        """
        module_name, _, class_name = self.platform.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"board {self.name!r} needs {module_name} ({exc}); install the board tools with "
                "pip install 'spikeforge[boards]'"
            ) from exc
        return getattr(module, class_name)

    def make_platform(self):
        """A fresh platform object (Amaranth platforms can build one design each)."""
        return self.platform_class()()


# The chip of an iCE40 UP5K board.  4 x SB_SPRAM256KA = 64k x 16 bit = 128k 8-bit weights; the
# neuron state (v, i, acc, bias: 68 bits a neuron) of 1024 neurons, the spike bitmaps and the
# population and descriptor tables fit the 30 EBR (docs/boards.md).  One threshold per
# population: per-neuron thresholds fit the EBR too (4 more) but not the logic cells.  24 MHz =
# 12 MHz * 2 is a clock the PLL makes exactly and divides 3 Mbaud exactly (divisor 8).
_UP5K_CHIP = ChipParams(
    neurons=1024,
    inputs=256,
    populations=4,
    synapses=128 * 1024,
    lanes=1,
    clock_mhz=24.0,
    baud=DEFAULT_BAUD,
    per_neuron_threshold=False,
)

_ULX3S = Board(
    name="ulx3s-85f",
    title="ULX3S 85F",
    platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
    family="ecp5",
    device="LFE5U-85F-6BG381C",
    osc_mhz=25.0,
    clock_resource="clk25",
    uart_resource="uart",
    usb_uart="FTDI FT231X (up to 3 Mbaud)",
    # 208 x 18 kbit EBR: 352k 8-bit weights (176k 16-bit words) take 176 blocks, the state of
    # 4096 neurons (84 bits each) 21, the spike bitmaps and tables the rest (docs/boards.md).
    # 90 MHz = 25 MHz * 18 / 5 is a clock the PLL makes exactly; 3 Mbaud is divisor 30
    # (exact).  The weight banks and the fast build make it with margin (docs/core.md, "Timing
    # options"); at 100 MHz placement decided it: seeds 1-3 reached 87.7-98.6 MHz on one
    # netlist and 103.9 on another (docs/boards.md, "Timing").
    chip=ChipParams(
        neurons=4096,
        inputs=1024,
        populations=8,
        synapses=352 * 1024,
        lanes=2,
        clock_mhz=90.0,
        baud=DEFAULT_BAUD,
        weight_banks=16,
        fast=True,
        # one 18-kbit block RAM holds 2 kB: four full request frames in flight
        rx_window=2048,
        # on-chip spike encoding and count readout (the UP5K has no logic cells left)
        encoders=True,
        # synaptic delays up to 7 steps: the spike bitmaps of the last 8 steps
        max_delay=7,
    ),
    openfpgaloader_board="ulx3s",
    alt_programmer=("fujprog",),
    bitstream_ext="bit",
    notes="The FT231X is both the JTAG programmer and the UART (/dev/ttyUSB0).",
)

# The same board with WIDE_FORMAT (16-bit weights, 24-bit state, 32-bit accumulator): networks
# whose weights are several times their thresholds keep their behaviour (docs/neuron.md, "Two
# formats").  A 16-bit weight takes the block RAM of two 8-bit ones, and the neuron state is
# wider, so it holds fewer synapses.  75 MHz = 25 MHz * 3 (3 Mbaud is divisor 25): at 100 MHz
# the 16-bit weight words from the far block RAMs missed timing (88 MHz, docs/boards.md).
_ULX3S_WIDE = replace(
    _ULX3S,
    name="ulx3s-85f-wide",
    title="ULX3S 85F, wide format",
    chip=replace(_ULX3S.chip, synapses=160 * 1024, clock_mhz=75.0, fmt=WIDE_FORMAT),
    notes=(
        "The ULX3S 85F with 16-bit weights and 24-bit neuron state (spikeforge build "
        "--board ulx3s-85f-wide); the FT231X is both the JTAG programmer and the UART."
    ),
)

# The same board for convolutional networks (docs/core.md, "Weight-shared blocks"): block RAM
# goes to neuron state and to the per-source table of the weight-shared blocks instead of dense
# weights.  10,240 neurons (84 bits each, ~55 EBR), 12,288 CONV words (24 EBR), 192k 8-bit
# synapses for the dense layers and the kernels (96 EBR), one lane (a convolution's runs along
# a row are a few targets long, docs/core.md), delays up to 7 steps.  75 MHz = 25 MHz * 3
# (3 Mbaud is divisor 25): placement seeds 1-3 reach 81.9 / 78.8 / 74.8 MHz (2026-12-06); each
# neuron memory is a cascade of ten block RAMs whose output multiplexer sits between the block
# RAM and its flip-flop, so those reads cannot use the output register (docs/boards.md).
_ULX3S_CONV = replace(
    _ULX3S,
    name="ulx3s-85f-conv",
    title="ULX3S 85F, convolution",
    chip=replace(_ULX3S.chip, neurons=10240, inputs=4096, synapses=192 * 1024, lanes=1,
                 conv_words=12288, clock_mhz=75.0),
    notes=(
        "The ULX3S 85F for convolutional networks: 10,240 neurons, weight-shared blocks "
        "(spikeforge build --board ulx3s-85f-conv); the FT231X is both the JTAG programmer and "
        "the UART."
    ),
)

_BOARDS = [
    Board(
        name="icebreaker",
        title="iCEBreaker",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40",
        device="iCE40UP5K-SG48",
        osc_mhz=12.0,
        clock_resource="clk12",
        uart_resource="uart",
        usb_uart="FTDI FT2232H channel B (up to 12 Mbaud)",
        chip=_UP5K_CHIP,
        openfpgaloader_board="ice40_generic",
        alt_programmer=("iceprog",),
        bitstream_ext="bin",
        synth_opts=("-dsp", "-spram"),
        notes="The FT2232H's second channel is the UART (/dev/ttyUSB1 on Linux).",
    ),
    _ULX3S,
    _ULX3S_WIDE,
    _ULX3S_CONV,
    Board(
        name="icesugar",
        title="iCESugar v1.5",
        platform="amaranth_boards.icesugar:ICESugarPlatform",
        family="ice40",
        device="iCE40UP5K-SG48",
        osc_mhz=12.0,
        clock_resource="clk12",
        uart_resource="uart",
        usb_uart="iCELink (STM32 CMSIS-DAP virtual COM port; 115200 baud is the safe rate)",
        chip=replace(_UP5K_CHIP, baud=115_200),  # the iCEBreaker's chip, at the iCELink's rate
        openfpgaloader_board=None,
        alt_programmer=("icesprog",),
        bitstream_ext="bin",
        synth_opts=("-dsp", "-spram"),
        notes=(
            "Same FPGA as the iCEBreaker.  Program it with icesprog, or copy top.bin onto the "
            "iCELink USB drive.  The UART goes through the iCELink's virtual COM port, whose "
            "top rate is not documented: the board runs its link at 115200 baud."
        ),
    ),
]

BOARDS = {board.name: board for board in _BOARDS}
"""Every board, by registry name."""

_ALIASES = {"ulx3s": "ulx3s-85f", "ulx3s_85f": "ulx3s-85f", "ulx3s85f": "ulx3s-85f",
            "ulx3s-wide": "ulx3s-85f-wide"}


def board_names():
    """The registry names, in registry order."""
    return list(BOARDS)


def get_board(board):
    """A :class:`Board` from itself or its registry name (case-insensitive; ``ulx3s`` works).

    Raises
    ------
    ConfigError
        Unknown board name; the message lists the known boards.
    """
    if isinstance(board, Board):
        return board
    key = str(board).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BOARDS:
        raise ConfigError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[key]


def default_out_dir(board):
    """``build/boards/<name>`` under the current directory: where ``spikeforge build`` writes a
    board's bitstream and where ``spikeforge flash`` looks for it."""
    return Path("build") / "boards" / get_board(board).name
