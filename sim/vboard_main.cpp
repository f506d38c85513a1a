// spikeforge virtual board: a Verilated chip top served as a byte stream on a TCP port.
//
// Implements the harness described in docs/virtual_board.md.  The Python side
// (sim/virtual_board.py) writes "vboard_config.h" next to a copy of this file; it names the
// Verilated top class and the ports of the top (clk, rst, the rx and tx byte streams and the
// optional idle hint), so the same harness serves any top that follows the port contract, and
// defines the layout of the --stats-file counters (struct VbStats).
//
// One TCP client at a time is bridged to the chip's UART byte stream: bytes received from the
// socket go into rx (valid/ready), bytes the chip presents on tx go to the socket.  The chip keeps
// its state across connections, like a board on a cable.  When the design is at rest the harness
// blocks in poll(); when it works it runs batches of cycles between non-blocking socket polls.
// A batch ends as soon as the chip is idle (its idle output high, no rx byte waiting), when tx
// bytes have waited --flush-cycles cycles (so replies stream out while the chip works), or when
// the rx ring runs dry (more input may be waiting in the socket); at the latest after --batch
// cycles.  --ignore-idle restores the old behaviour (fixed batches, rest found only by the state
// probe) for side-by-side measurements.
//
// Command line (all optional):
//   --port N              TCP port to listen on, 0 (default) = any free port
//   --host ADDR           IPv4 address to listen on (default 127.0.0.1)
//   --stats-file PATH     live counters (cycles, bytes), memory-mapped; layout: VbStats in
//                         vboard_config.h
//   --parent-pid PID      exit when this process is no longer our parent (it died)
//   --max-idle-seconds S  exit after S seconds with no client connected (0 = never, the default)
//   --batch N             at most N cycles between two socket polls while busy (default 4096)
//   --flush-cycles N      send tx bytes at most N cycles after the first of them was produced,
//                         even while the chip works (default 256)
//   --ignore-idle         the old harness: fixed batches of --batch cycles, replies sent at the
//                         end of a batch, rest found only by the state probe (the idle output is
//                         still read, for the busy_cycles counter)
//   --reset-cycles N      cycles with rst high at start-up (default 4)
//   --settle-cycles N     after a disconnect, run the chip until it rests (at most N cycles,
//                         default 1000000) before the next client is accepted
//   --ring-bytes N        size of the rx and tx socket buffers, a power of two (default 65536);
//                         tiny rings make the harness exert back-pressure often (for tests)
//   --trace PATH          write a VCD or FST waveform (only if built with tracing)
//   --verbose             log connections to stderr
// stdout carries exactly two lines: "LISTENING <port>" once the socket is bound, and
// "EXIT cycles=<n> busy_cycles=<n> rx_bytes=<n> tx_bytes=<n> dropped_bytes=<n> connections=<n>
// idle_waits=<n>" at exit.

#include <verilated.h>

#include "vboard_config.h"

#include VB_TOP_HEADER
#include VB_ROOT_HEADER

#if VB_TRACE && VB_TRACE_FST
#include <verilated_fst_c.h>
using VbTraceFile = VerilatedFstC;
#elif VB_TRACE
#include <verilated_vcd_c.h>
using VbTraceFile = VerilatedVcdC;
#endif

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0  // macOS: SIGPIPE is ignored below instead
#endif

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

// Live counters shared with the host through --stats-file: struct VbStats and VB_STATS_MAGIC,
// generated into vboard_config.h from STATS_FIELDS in sim/virtual_board.py.

// A power-of-two byte ring buffer that the socket reads into and writes from directly.
class Ring {
public:
    explicit Ring(size_t size) : m_buf(size), m_mask(size - 1) {}
    size_t count() const { return m_count; }
    size_t space() const { return m_buf.size() - m_count; }
    bool empty() const { return m_count == 0; }
    uint8_t front() const { return m_buf[m_head]; }
    void pop() { m_head = (m_head + 1) & m_mask; --m_count; }
    void push(uint8_t b) { m_buf[(m_head + m_count) & m_mask] = b; ++m_count; }
    void clear() { m_head = 0; m_count = 0; }
    // Contiguous free region after the tail, and contiguous data region at the head.
    uint8_t* tail_ptr(size_t* len) {
        size_t tail = (m_head + m_count) & m_mask;
        size_t contiguous = m_buf.size() - tail;
        *len = space() < contiguous ? space() : contiguous;
        return &m_buf[tail];
    }
    void produced(size_t n) { m_count += n; }
    const uint8_t* head_ptr(size_t* len) const {
        size_t contiguous = m_buf.size() - m_head;
        *len = m_count < contiguous ? m_count : contiguous;
        return &m_buf[m_head];
    }
    void consumed(size_t n) { m_head = (m_head + n) & m_mask; m_count -= n; }

private:
    std::vector<uint8_t> m_buf;
    size_t m_mask;
    size_t m_head = 0;
    size_t m_count = 0;
};

struct Options {
    int port = 0;
    std::string host = "127.0.0.1";
    std::string stats_file;
    long parent_pid = 0;
    double max_idle_seconds = 0.0;
    uint64_t batch = 4096;
    uint64_t flush_cycles = 256;
    bool ignore_idle = false;
    uint64_t reset_cycles = 4;
    uint64_t settle_cycles = 1000000;
    size_t ring_bytes = 1 << 16;
    std::string trace_file;
    bool verbose = false;
};

[[noreturn]] void usage_error(const char* what, const char* value) {
    std::fprintf(stderr, "vboard: %s: %s\n", what, value ? value : "(missing)");
    std::exit(2);
}

long parse_long(const char* name, const char* value, long lo, long hi) {
    if (!value) usage_error(name, "missing value");
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(value, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        std::fprintf(stderr, "vboard: %s must be an integer in [%ld, %ld], got '%s'\n", name, lo,
                     hi, value);
        std::exit(2);
    }
    return v;
}

Options parse_args(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--port") {
            o.port = static_cast<int>(parse_long("--port", next, 0, 65535)); ++i;
        } else if (a == "--host") {
            if (!next) usage_error("--host", nullptr);
            o.host = next; ++i;
        } else if (a == "--stats-file") {
            if (!next) usage_error("--stats-file", nullptr);
            o.stats_file = next; ++i;
        } else if (a == "--parent-pid") {
            o.parent_pid = parse_long("--parent-pid", next, 1, 0x7fffffff); ++i;
        } else if (a == "--max-idle-seconds") {
            if (!next) usage_error("--max-idle-seconds", nullptr);
            char* end = nullptr;
            o.max_idle_seconds = std::strtod(next, &end);
            if (*end || o.max_idle_seconds < 0) usage_error("--max-idle-seconds must be >= 0", next);
            ++i;
        } else if (a == "--batch") {
            o.batch = static_cast<uint64_t>(parse_long("--batch", next, 1, 1L << 30)); ++i;
        } else if (a == "--flush-cycles") {
            o.flush_cycles = static_cast<uint64_t>(parse_long("--flush-cycles", next, 0, 1L << 30));
            ++i;
        } else if (a == "--ignore-idle") {
            o.ignore_idle = true;
        } else if (a == "--reset-cycles") {
            o.reset_cycles = static_cast<uint64_t>(parse_long("--reset-cycles", next, 1, 1L << 20));
            ++i;
        } else if (a == "--settle-cycles") {
            o.settle_cycles = static_cast<uint64_t>(parse_long("--settle-cycles", next, 0, 1L << 40));
            ++i;
        } else if (a == "--ring-bytes") {
            long v = parse_long("--ring-bytes", next, 1, 1L << 24);
            if (v & (v - 1)) usage_error("--ring-bytes must be a power of two", next);
            o.ring_bytes = static_cast<size_t>(v);
            ++i;
        } else if (a == "--trace") {
            if (!next) usage_error("--trace", nullptr);
            o.trace_file = next; ++i;
        } else if (a == "--verbose") {
            o.verbose = true;
        } else if (a.rfind("+verilator+", 0) == 0) {
            // handled by Verilated::commandArgs
        } else {
            usage_error("unknown argument", argv[i]);
        }
    }
#if !VB_TRACE
    if (!o.trace_file.empty()) {
        std::fprintf(stderr, "vboard: --trace needs a board built with trace=True\n");
        std::exit(2);
    }
#endif
    return o;
}

double now_seconds() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

class Board {
public:
    Board(VerilatedContext* ctx, const Options& opt)
        : m_top(new VB_TOP_CLASS{ctx, "TOP"}), m_rx(opt.ring_bytes), m_tx(opt.ring_bytes), m_opt(opt) {
        m_snapshot.resize(sizeof(*m_top->rootp));
#if VB_TRACE
        if (!opt.trace_file.empty()) {
            ctx->traceEverOn(true);
            m_trace.reset(new VbTraceFile);
            m_top->trace(m_trace.get(), 99);
            m_trace->open(opt.trace_file.c_str());
        }
#endif
        m_stats = &m_local_stats;
        if (!opt.stats_file.empty()) map_stats(opt.stats_file);
        std::memset(m_stats, 0, sizeof(VbStats));
        m_stats->pid = static_cast<uint64_t>(getpid());
        std::memcpy(m_stats->magic, VB_STATS_MAGIC, sizeof(m_stats->magic));
    }

    ~Board() {
#if VB_TRACE
        if (m_trace) m_trace->close();
#endif
        m_top->final();
        if (m_stats != &m_local_stats) {
            msync(m_stats, sizeof(VbStats), MS_SYNC);
            munmap(m_stats, sizeof(VbStats));
        }
    }

    void reset() {
        m_top->VB_PORT_RST = 1;
        m_top->VB_PORT_RX_VALID = 0;
        m_top->VB_PORT_RX_DATA = 0;
        m_top->VB_PORT_TX_READY = 0;
        for (uint64_t i = 0; i < m_opt.reset_cycles; ++i) {
            m_top->VB_PORT_CLK = 0;
            m_top->eval();
            dump();
            m_top->VB_PORT_CLK = 1;
            m_top->eval();
            dump();
            ++m_stats->cycles;
            ++m_stats->busy_cycles;
        }
        m_top->VB_PORT_RST = 0;
    }

    // One clock cycle: present the stream inputs, settle, sample the handshakes, rising edge.
    // Returns true if a byte moved on rx or tx.
    bool cycle() {
        bool have_rx = !m_rx.empty();
        m_top->VB_PORT_RX_VALID = have_rx;
        m_top->VB_PORT_RX_DATA = have_rx ? m_rx.front() : 0;
        m_top->VB_PORT_TX_READY = m_tx.space() > 0;
        m_top->VB_PORT_CLK = 0;
        m_top->eval();
        dump();
        bool rx_fire = have_rx && m_top->VB_PORT_RX_READY;
        bool tx_fire = m_top->VB_PORT_TX_VALID && m_top->VB_PORT_TX_READY;
        uint8_t tx_byte = static_cast<uint8_t>(m_top->VB_PORT_TX_DATA);
#if VB_HAS_IDLE
        m_idle_hint = m_top->VB_PORT_IDLE;
#endif
        m_top->VB_PORT_CLK = 1;
        m_top->eval();
        dump();
        ++m_stats->cycles;
#if VB_HAS_IDLE
        if (!m_idle_hint || rx_fire || tx_fire) ++m_stats->busy_cycles;
#else
        ++m_stats->busy_cycles;  // no idle output: every cycle counts as busy
#endif
        if (rx_fire) {
            m_rx.pop();
            ++m_stats->rx_bytes;
        }
        if (tx_fire) {
            m_tx.push(tx_byte);
            ++m_stats->tx_bytes;
        }
        return rx_fire || tx_fire;
    }

    // Run up to m_opt.batch cycles.  Returns true if the design was found at rest: with the stream
    // inputs as they are now, another clock cycle would change nothing.  Returns false early when
    // the socket has work: tx bytes have waited m_opt.flush_cycles cycles, or the rx ring ran dry.
    bool run_batch() {
        if (m_opt.ignore_idle) return run_fixed_batch();
        uint64_t quiet = 0;
        const bool had_rx = !m_rx.empty();
        uint64_t tx_first = m_tx.empty() ? UINT64_MAX : 0;  // cycle the oldest tx byte arrived
        for (uint64_t i = 0; i < m_opt.batch; ++i) {
            if (cycle()) {
                quiet = 0;
            } else {
                ++quiet;
#if VB_HAS_IDLE
                if (m_idle_hint && m_rx.empty()) return true;
#endif
            }
            if (!m_tx.empty()) {
                if (tx_first == UINT64_MAX) tx_first = i;
                if (i - tx_first >= m_opt.flush_cycles) return false;
            }
            if (had_rx && m_rx.empty()) return false;
        }
        return probe_rest(quiet);
    }

    // The old harness (--ignore-idle): always m_opt.batch cycles, then the state probe.
    bool run_fixed_batch() {
        uint64_t quiet = 0;
        for (uint64_t i = 0; i < m_opt.batch; ++i) quiet = cycle() ? 0 : quiet + 1;
        return probe_rest(quiet);
    }

    // After a batch whose last `quiet` cycles moved no byte: is the design at a fixed point?
    bool probe_rest(uint64_t quiet) {
        if (quiet < 16 && quiet < m_opt.batch) return false;
        // Fixed-point probe: if one more cycle with unchanged inputs leaves every state bit of
        // the (flattened) model unchanged and moves no byte, it stays so until an input changes.
        std::memcpy(m_snapshot.data(), m_top->rootp, m_snapshot.size());
        if (cycle()) return false;
        return std::memcmp(m_snapshot.data(), m_top->rootp, m_snapshot.size()) == 0;
    }

    Ring& rx() { return m_rx; }
    Ring& tx() { return m_tx; }
    VbStats& stats() { return *m_stats; }

private:
    void dump() {
#if VB_TRACE
        if (m_trace) m_trace->dump(m_trace_time++);
#endif
    }

    void map_stats(const std::string& path) {
        int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
        if (fd < 0 || ftruncate(fd, sizeof(VbStats)) != 0) {
            std::fprintf(stderr, "vboard: cannot open --stats-file %s: %s\n", path.c_str(),
                         std::strerror(errno));
            std::exit(2);
        }
        void* p = mmap(nullptr, sizeof(VbStats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "vboard: cannot map --stats-file %s: %s\n", path.c_str(),
                         std::strerror(errno));
            std::exit(2);
        }
        m_stats = static_cast<VbStats*>(p);
    }

    std::unique_ptr<VB_TOP_CLASS> m_top;
    Ring m_rx;
    Ring m_tx;
    const Options& m_opt;
    std::vector<uint8_t> m_snapshot;
    VbStats m_local_stats{};
    VbStats* m_stats;
    bool m_idle_hint = false;
#if VB_TRACE
    std::unique_ptr<VbTraceFile> m_trace;
    uint64_t m_trace_time = 0;
#endif
};

int open_listener(const Options& opt, int* bound_port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        std::perror("vboard: socket");
        std::exit(1);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(opt.port));
    if (inet_pton(AF_INET, opt.host.c_str(), &addr.sin_addr) != 1) {
        std::fprintf(stderr, "vboard: --host must be an IPv4 address, got '%s'\n",
                     opt.host.c_str());
        std::exit(2);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        std::fprintf(stderr, "vboard: cannot listen on %s:%d: %s\n", opt.host.c_str(), opt.port,
                     std::strerror(errno));
        std::exit(1);
    }
    if (listen(fd, 4) != 0) {
        std::perror("vboard: listen");
        std::exit(1);
    }
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    *bound_port = ntohs(addr.sin_port);
    set_nonblocking(fd);
    return fd;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse_args(argc, argv);

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGHUP, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    ctx->fatalOnError(true);

    int port = 0;
    int listen_fd = open_listener(opt, &port);
    std::unique_ptr<Board> board(new Board(ctx.get(), opt));
    board->reset();

    std::printf("LISTENING %d\n", port);
    std::fflush(stdout);

    int client = -1;
    bool at_rest = false;
    double last_client_seen = now_seconds();
    // After a disconnect the chip finishes what the old client sent (its replies are dropped)
    // before the next client is accepted, so a new session never sees stale output.
    uint64_t settle_until = 0;
    bool settling = false;

    auto drop_client = [&](const char* why) {
        if (client < 0) return;
        close(client);
        client = -1;
        // Bytes the chip produced for this client and not yet sent are lost with the cable.
        board->stats().dropped_bytes += board->tx().count();
        board->tx().clear();
        last_client_seen = now_seconds();
        settling = opt.settle_cycles > 0;
        settle_until = board->stats().cycles + opt.settle_cycles;
        if (opt.verbose)
            std::fprintf(stderr, "vboard: client disconnected (%s) at cycle %llu\n", why,
                         static_cast<unsigned long long>(board->stats().cycles));
    };

    while (!g_stop) {
        // 1. Socket I/O: block only when the design is at rest, so an idle board uses no CPU.
        pollfd fds[2];
        nfds_t nfds = 0;
        if (settling && (at_rest || board->stats().cycles >= settle_until)) settling = false;
        if (client < 0) {
            if (!settling) fds[nfds++] = pollfd{listen_fd, POLLIN, 0};
        } else {
            short ev = 0;
            if (board->rx().space() > 0) ev |= POLLIN;
            if (!board->tx().empty()) ev |= POLLOUT;
            fds[nfds++] = pollfd{client, ev, 0};
        }
        int timeout_ms = at_rest ? 200 : 0;
        int n = poll(fds, nfds, timeout_ms);
        if (n < 0 && errno != EINTR) {
            std::perror("vboard: poll");
            break;
        }
        bool inputs_changed = false;
        if (n > 0 && client < 0 && nfds > 0 && (fds[0].revents & POLLIN)) {
            int c = accept(listen_fd, nullptr, nullptr);
            if (c >= 0) {
                set_nonblocking(c);
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                client = c;
                ++board->stats().connections;
                inputs_changed = true;
                if (opt.verbose)
                    std::fprintf(stderr, "vboard: client connected at cycle %llu\n",
                                 static_cast<unsigned long long>(board->stats().cycles));
            }
        } else if (n > 0 && client >= 0) {
            short re = fds[0].revents;
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                while (board->rx().space() > 0) {
                    size_t len = 0;
                    uint8_t* p = board->rx().tail_ptr(&len);
                    ssize_t got = recv(client, p, len, 0);
                    if (got > 0) {
                        board->rx().produced(static_cast<size_t>(got));
                        inputs_changed = true;
                        if (static_cast<size_t>(got) < len) break;
                    } else if (got == 0) {
                        drop_client("closed by peer");
                        inputs_changed = true;
                        break;
                    } else {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                            drop_client(std::strerror(errno));
                            inputs_changed = true;
                        }
                        break;
                    }
                }
            }
        }
        // Send whatever the chip produced (also right after a batch, without waiting for POLLOUT).
        if (client >= 0 && !board->tx().empty()) {
            bool was_full = board->tx().space() == 0;
            while (!board->tx().empty()) {
                size_t len = 0;
                const uint8_t* p = board->tx().head_ptr(&len);
                ssize_t sent = send(client, p, len, MSG_NOSIGNAL);
                if (sent > 0) {
                    board->tx().consumed(static_cast<size_t>(sent));
                } else {
                    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        drop_client(std::strerror(errno));
                        inputs_changed = true;
                    }
                    break;
                }
            }
            if (was_full && client >= 0 && board->tx().space() > 0) inputs_changed = true;
        }
        if (inputs_changed) at_rest = false;

        // 2. Housekeeping: parent death, idle timeout.
        if (opt.parent_pid && getppid() != opt.parent_pid) {
            if (opt.verbose) std::fprintf(stderr, "vboard: parent process gone, exiting\n");
            break;
        }
        if (client < 0 && opt.max_idle_seconds > 0 &&
            now_seconds() - last_client_seen > opt.max_idle_seconds) {
            if (opt.verbose) std::fprintf(stderr, "vboard: no client for a while, exiting\n");
            break;
        }

        // 3. Run the chip.
        if (!at_rest) {
            at_rest = board->run_batch();
            if (at_rest) ++board->stats().idle_waits;
            if (client < 0 && !board->tx().empty()) {
                // No cable: what the chip sends is lost, as on a board.
                board->stats().dropped_bytes += board->tx().count();
                board->tx().clear();
                at_rest = false;
            }
        }
    }

    if (client >= 0) close(client);
    close(listen_fd);
    VbStats s = board->stats();
    board.reset();
    std::printf("EXIT cycles=%llu busy_cycles=%llu rx_bytes=%llu tx_bytes=%llu dropped_bytes=%llu "
                "connections=%llu idle_waits=%llu\n",
                static_cast<unsigned long long>(s.cycles),
                static_cast<unsigned long long>(s.busy_cycles),
                static_cast<unsigned long long>(s.rx_bytes),
                static_cast<unsigned long long>(s.tx_bytes),
                static_cast<unsigned long long>(s.dropped_bytes),
                static_cast<unsigned long long>(s.connections),
                static_cast<unsigned long long>(s.idle_waits));
    std::fflush(stdout);
    return 0;
}
