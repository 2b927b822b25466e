// Command loadgen opens many concurrent Server-Sent Events connections to one
// server and measures what the server delivers: events per second, delivery
// latency (receive time minus the generation timestamp carried in the event,
// both read from this machine's wall clock), lost events (gaps in the
// per-connection id sequence) and dropped connections.
//
// It is written to stay out of the way of the server under test: one
// goroutine per connection, raw HTTP/1.1 over net.Conn, a minimal SSE line
// parser (id / event / data fields, comments, blank-line dispatch), a shared
// lock-free latency histogram with 1% wide buckets, no per-event allocation.
//
// Phases: ramp (open -c connections at -ramp-rate per second, retrying connect
// errors until -connect-timeout), warm-up (-warmup seconds), measurement
// (-duration seconds), done. Progress lines go to stderr; the phase changes are
// printed as "loadgen: phase=<name>" so a driver can sample the server at the
// edges of the measurement window. The result is one JSON object on stdout.
//
// Timestamps: the JSON field "ts_ns" (integer Unix nanoseconds) is preferred;
// otherwise "ts" (ISO-8601 / RFC 3339, e.g. "2026-11-27T02:03:04.567Z", so
// millisecond resolution) is used.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSlowPerConn bounds the slow events one connection records for -slow-ms.
const maxSlowPerConn = 2000

const (
	phaseRamp int32 = iota
	phaseWarmup
	phaseMeasure
	phaseDone
)

// Latency histogram: bucket i holds latencies in microseconds v with
// floor(log(1+v)/log(1.01)) == i, so every bucket is 1% wide.
const (
	histGrowth  = 1.01
	histBuckets = 2400 // covers up to ~ 2.3e10 us; larger values land in the last bucket
	histShards  = 16
)

var logGrowth = math.Log(histGrowth)

type histogram struct {
	shards [histShards][histBuckets]uint64
}

func (h *histogram) add(shard int, latencyNs int64) {
	us := float64(latencyNs) / 1e3
	if us < 0 {
		us = 0
	}
	i := int(math.Log1p(us) / logGrowth)
	if i >= histBuckets {
		i = histBuckets - 1
	}
	atomic.AddUint64(&h.shards[shard%histShards][i], 1)
}

// quantiles returns the upper edge (in ms) of the bucket holding each quantile.
func (h *histogram) quantiles(qs []float64) (uint64, []float64) {
	var merged [histBuckets]uint64
	var total uint64
	for s := range h.shards {
		for i := range merged {
			n := atomic.LoadUint64(&h.shards[s][i])
			merged[i] += n
			total += n
		}
	}
	out := make([]float64, len(qs))
	if total == 0 {
		return 0, out
	}
	for k, q := range qs {
		rank := uint64(math.Ceil(q * float64(total)))
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for i, n := range merged {
			seen += n
			if seen >= rank {
				out[k] = math.Expm1(float64(i+1)*logGrowth) / 1e3
				break
			}
		}
	}
	return total, out
}

// connStats is owned by one connection goroutine until it exits.
type connStats struct {
	connected     bool
	events        uint64 // every dispatched event with data
	windowEvents  uint64 // events received during the measurement window
	windowTicks   uint64 // of which "tick" events (quoteflow also sends "bar")
	windowBytes   uint64
	lost          uint64 // ids skipped: sum of (id - last - 1) over forward gaps
	outOfOrder    uint64 // ids not greater than the previous one
	badIDs        uint64 // events whose id is missing or not an integer
	noTimestamp   uint64 // events in the window without a usable timestamp
	negative      uint64 // latencies below zero (clock skew / ms truncation)
	maxLatencyNs  int64
	slow          [][2]int64 // (generation ns, latency ns) of events later than -slow-ms, capped
	disconnected  bool       // the server ended the stream before the run was over
	disconnectErr string
}

type loadgen struct {
	addr, path, host string
	tsField          string
	slowNs           int64 // 0: do not record slow events
	phase            int32
	connected        int64
	connectErrors    int64
	httpErrors       int64
	hist             histogram
	mu               sync.Mutex
	conns            []net.Conn
	errSamples       map[string]int
}

func (lg *loadgen) noteError(err error) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	// Group by cause: "dial tcp 127.0.0.1:80: i/o timeout" -> "dial: i/o timeout".
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = strings.SplitN(msg, " ", 2)[0] + ": " + msg[i+2:]
	}
	if len(lg.errSamples) < 8 || lg.errSamples[msg] > 0 {
		lg.errSamples[msg]++
	}
}

func (lg *loadgen) track(c net.Conn) bool {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if atomic.LoadInt32(&lg.phase) == phaseDone {
		return false
	}
	lg.conns = append(lg.conns, c)
	return true
}

var errStatus = errors.New("unexpected HTTP status")

// open dials and sends the request; it returns once the response headers say 200.
func (lg *loadgen) open() (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", lg.addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	req := "GET " + lg.path + " HTTP/1.1\r\nHost: " + lg.host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	raw := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(raw, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		atomic.AddInt64(&lg.httpErrors, 1)
		return nil, nil, fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	// resp.Body undoes the chunked transfer coding when the server uses it.
	return conn, bufio.NewReaderSize(resp.Body, 64<<10), nil
}

func (lg *loadgen) run(index int, deadline time.Time, st *connStats, ready *sync.WaitGroup) {
	backoff := 50 * time.Millisecond
	var conn net.Conn
	var body *bufio.Reader
	for {
		if atomic.LoadInt32(&lg.phase) == phaseDone || time.Now().After(deadline) {
			ready.Done()
			return
		}
		var err error
		conn, body, err = lg.open()
		if err == nil {
			break
		}
		atomic.AddInt64(&lg.connectErrors, 1)
		lg.noteError(err)
		time.Sleep(backoff + time.Duration(rand.Int63n(int64(backoff))))
		if backoff < time.Second {
			backoff *= 2
		}
	}
	if !lg.track(conn) {
		conn.Close()
		ready.Done()
		return
	}
	st.connected = true
	atomic.AddInt64(&lg.connected, 1)
	ready.Done()
	err := lg.read(index, body, st)
	if atomic.LoadInt32(&lg.phase) != phaseDone {
		st.disconnected = true
		if err != nil {
			st.disconnectErr = err.Error()
		}
	}
}

var (
	fieldID    = []byte("id")
	fieldData  = []byte("data")
	fieldEvent = []byte("event")
	typeTick   = []byte("tick")
	keyTsNs    = []byte(`"ts_ns":`)
	keyTs      = []byte(`"ts":"`)
)

// read parses the event stream until it ends. Only what the benchmark needs:
// the id and data fields, comments skipped, an event dispatched on a blank line.
func (lg *loadgen) read(index int, r *bufio.Reader, st *connStats) error {
	lastID := int64(-1)
	var data []byte
	var long []byte
	hasData, hasID, isTick := false, false, false
	var id int64
	idOK := false
	var cache tsCache
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			return err
		}
		if atomic.LoadInt32(&lg.phase) == phaseMeasure {
			st.windowBytes += uint64(len(line))
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if !hasData {
				hasID, isTick = false, false
				continue
			}
			lg.dispatch(index, st, data, isTick, hasID && idOK, id, &lastID, &cache)
			data = data[:0]
			hasData, hasID, idOK, isTick = false, false, false, false
			continue
		}
		if line[0] == ':' {
			continue // comment, e.g. a keep-alive
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		// "retry" is not needed; every event type counts, ticks also separately.
		switch {
		case bytes.Equal(name, fieldData):
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case bytes.Equal(name, fieldEvent):
			isTick = bytes.Equal(value, typeTick)
		case bytes.Equal(name, fieldID):
			hasID = true
			id, idOK = parseDigits(value)
		}
	}
}

// parseDigits reads a non-negative decimal integer without allocating.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0') // 19 digits cannot overflow uint64
	}
	if n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}

// tsCache remembers the last ISO timestamp parsed on a connection: all events of
// one tick round carry the same one.
type tsCache struct {
	text []byte
	ns   int64
}

func (lg *loadgen) dispatch(index int, st *connStats, data []byte, tick, idOK bool, id int64, lastID *int64, cache *tsCache) {
	st.events++
	if idOK {
		switch {
		case *lastID < 0 || id == *lastID+1:
		case id > *lastID+1:
			st.lost += uint64(id - *lastID - 1)
		default:
			st.outOfOrder++
		}
		if id > *lastID {
			*lastID = id
		}
	} else {
		st.badIDs++
	}
	if atomic.LoadInt32(&lg.phase) != phaseMeasure {
		return
	}
	st.windowEvents++
	if tick {
		st.windowTicks++
	}
	gen, ok := lg.timestamp(data, cache)
	if !ok {
		st.noTimestamp++
		return
	}
	lat := time.Now().UnixNano() - gen
	if lat < 0 {
		st.negative++
	}
	if lat > st.maxLatencyNs {
		st.maxLatencyNs = lat
	}
	if lg.slowNs > 0 && lat > lg.slowNs && len(st.slow) < maxSlowPerConn {
		st.slow = append(st.slow, [2]int64{gen, lat})
	}
	lg.hist.add(index, lat)
}

// timestamp finds the generation time in the event's JSON without decoding it.
func (lg *loadgen) timestamp(data []byte, cache *tsCache) (int64, bool) {
	if lg.tsField != "ts" {
		if i := bytes.Index(data, keyTsNs); i >= 0 {
			rest := bytes.TrimLeft(data[i+len(keyTsNs):], " ")
			j := 0
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			if n, ok := parseDigits(rest[:j]); ok {
				return n, true
			}
		}
		if lg.tsField == "ts_ns" {
			return 0, false
		}
	}
	if i := bytes.Index(data, keyTs); i >= 0 {
		rest := data[i+len(keyTs):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			if cache.text != nil && bytes.Equal(cache.text, rest[:j]) {
				return cache.ns, true
			}
			if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
				cache.text = append(cache.text[:0], rest[:j]...)
				cache.ns = t.UnixNano()
				return cache.ns, true
			}
		}
	}
	return 0, false
}

func cpuSeconds() (user, system float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return float64(ru.Utime.Nano()) / 1e9, float64(ru.Stime.Nano()) / 1e9
}

func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server host:port")
	path := flag.String("path", "/stream", "request path (with query string)")
	conns := flag.Int("c", 100, "concurrent connections")
	duration := flag.Float64("duration", 10, "measurement window in seconds, after ramp and warm-up")
	warmup := flag.Float64("warmup", 2, "seconds to wait after all connections are up")
	rampRate := flag.Float64("ramp-rate", 2000, "new connections started per second")
	connectTimeout := flag.Float64("connect-timeout", 120, "give up connecting after this many seconds")
	tsField := flag.String("ts-field", "auto", "generation timestamp: auto (ts_ns, else ts), ts_ns or ts")
	slowMs := flag.Float64("slow-ms", 0, "if > 0, list events later than this (per connection, first 2000) as slow_events")
	flag.Parse()
	if *conns < 1 || *duration <= 0 || *rampRate <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -c must be >= 1, -duration and -ramp-rate > 0")
		os.Exit(2)
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: bad -addr:", err)
		os.Exit(2)
	}
	fdLimit := raiseFileLimit()
	if fdLimit > 0 && uint64(*conns)+64 > fdLimit {
		fmt.Fprintf(os.Stderr, "loadgen: warning: %d connections but the open-file limit is %d\n", *conns, fdLimit)
	}

	lg := &loadgen{addr: *addr, path: *path, host: *addr, tsField: *tsField,
		slowNs: int64(*slowMs * 1e6), errSamples: map[string]int{}}
	stats := make([]connStats, *conns)
	var ready, finished sync.WaitGroup
	ready.Add(*conns)
	finished.Add(*conns)

	start := time.Now()
	deadline := start.Add(time.Duration(*connectTimeout * float64(time.Second)))
	go func() {
		gap := time.Duration(float64(time.Second) / *rampRate)
		next := time.Now()
		for i := 0; i < *conns; i++ {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(gap)
			go func(i int) {
				defer finished.Done()
				lg.run(i, deadline, &stats[i], &ready)
			}(i)
		}
	}()
	ready.Wait()
	rampSeconds := time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "loadgen: connected %d/%d in %.2fs (%d connect errors)\n",
		atomic.LoadInt64(&lg.connected), *conns, rampSeconds, atomic.LoadInt64(&lg.connectErrors))

	atomic.StoreInt32(&lg.phase, phaseWarmup)
	fmt.Fprintln(os.Stderr, "loadgen: phase=warmup")
	time.Sleep(time.Duration(*warmup * float64(time.Second)))

	u0, s0 := cpuSeconds()
	t0 := time.Now()
	atomic.StoreInt32(&lg.phase, phaseMeasure)
	fmt.Fprintln(os.Stderr, "loadgen: phase=measure")
	time.Sleep(time.Duration(*duration * float64(time.Second)))
	atomic.StoreInt32(&lg.phase, phaseDone)
	window := time.Since(t0).Seconds()
	u1, s1 := cpuSeconds()
	fmt.Fprintln(os.Stderr, "loadgen: phase=done")

	lg.mu.Lock()
	for _, c := range lg.conns {
		c.Close()
	}
	lg.mu.Unlock()
	finished.Wait()
	uAll, sAll := cpuSeconds()

	var total connStats
	silent, disconnected := 0, 0
	var maxLat int64
	disconnectErrs := map[string]int{}
	for i := range stats {
		st := &stats[i]
		total.events += st.events
		total.windowEvents += st.windowEvents
		total.windowTicks += st.windowTicks
		total.windowBytes += st.windowBytes
		total.lost += st.lost
		total.outOfOrder += st.outOfOrder
		total.badIDs += st.badIDs
		total.noTimestamp += st.noTimestamp
		total.negative += st.negative
		if st.maxLatencyNs > maxLat {
			maxLat = st.maxLatencyNs
		}
		if st.connected && st.windowEvents == 0 {
			silent++
		}
		if st.disconnected {
			disconnected++
			if len(disconnectErrs) < 8 || disconnectErrs[st.disconnectErr] > 0 {
				disconnectErrs[st.disconnectErr]++
			}
		}
	}
	samples, q := lg.hist.quantiles([]float64{0.5, 0.9, 0.99, 0.999})
	// A bucket's upper edge can lie above the exact maximum; never report more.
	clamp := func(ms float64) float64 { return math.Min(ms, float64(maxLat)/1e6) }
	type latency struct {
		Samples uint64  `json:"samples"`
		P50     float64 `json:"p50_ms"`
		P90     float64 `json:"p90_ms"`
		P99     float64 `json:"p99_ms"`
		P999    float64 `json:"p999_ms"`
		Max     float64 `json:"max_ms"`
		Missing uint64  `json:"no_timestamp"`
		Neg     uint64  `json:"negative"`
	}
	result := map[string]any{
		"connections_requested":  *conns,
		"connected":              atomic.LoadInt64(&lg.connected),
		"connect_errors":         atomic.LoadInt64(&lg.connectErrors),
		"http_errors":            atomic.LoadInt64(&lg.httpErrors),
		"connect_error_samples":  lg.errSamples,
		"disconnected":           disconnected,
		"disconnect_errors":      disconnectErrs,
		"silent_connections":     silent,
		"ramp_seconds":           round(rampSeconds, 3),
		"warmup_seconds":         *warmup,
		"window_seconds":         round(window, 3),
		"events_total":           total.events,
		"events_window":          total.windowEvents,
		"events_per_second":      round(float64(total.windowEvents)/window, 1),
		"ticks_window":           total.windowTicks,
		"ticks_per_second":       round(float64(total.windowTicks)/window, 1),
		"bytes_per_second":       round(float64(total.windowBytes)/window, 1),
		"lost_events":            total.lost,
		"out_of_order":           total.outOfOrder,
		"events_without_id":      total.badIDs,
		"timestamp_field":        *tsField,
		"fd_limit":               fdLimit,
		"cpu_seconds_window":     round(u1-u0+s1-s0, 3),
		"cpu_percent_window":     round(100*(u1-u0+s1-s0)/window, 1),
		"cpu_seconds_total":      map[string]float64{"user": round(uAll, 3), "system": round(sAll, 3)},
		"latency_bucket_percent": round((histGrowth-1)*100, 2),
		"latency": latency{
			Samples: samples,
			P50:     round(clamp(q[0]), 3), P90: round(clamp(q[1]), 3),
			P99: round(clamp(q[2]), 3), P999: round(clamp(q[3]), 3),
			Max:     round(float64(maxLat)/1e6, 3),
			Missing: total.noTimestamp, Neg: total.negative,
		},
	}
	if lg.slowNs > 0 {
		// [connection, generation ns, latency us] of every recorded slow event.
		slow := [][3]int64{}
		for i := range stats {
			for _, e := range stats[i].slow {
				slow = append(slow, [3]int64{int64(i), e[0], e[1] / 1000})
			}
		}
		result["slow_ms"] = *slowMs
		result["slow_events"] = slow
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
