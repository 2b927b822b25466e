package main

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, stream string, bufSize int) (*loadgen, connStats) {
	t.Helper()
	lg := &loadgen{tsField: "auto", phase: phaseMeasure, errSamples: map[string]int{}}
	var st connStats
	r := bufio.NewReaderSize(strings.NewReader(stream), bufSize)
	if err := lg.read(0, r, &st); err != io.EOF {
		t.Fatalf("read ended with %v, want io.EOF", err)
	}
	return lg, st
}

func TestReadCountsEventsGapsAndOrder(t *testing.T) {
	stream := "retry: 3000\r\n\r\n" +
		": keepalive\n\n" +
		"id: 1\nevent: tick\ndata: {\"ts_ns\":1}\n\n" +
		"id:2\r\nevent:tick\r\ndata:{\"ts_ns\":1}\r\n\r\n" +
		"id: 5\nevent: bar\ndata: {\"start\":\"x\"}\n\n" + // 3 and 4 lost
		"id: 4\nevent: tick\ndata: {}\n\n" + // out of order
		"id: x\nevent: tick\ndata: a\ndata: b\n\n" + // id not a number
		"event: tick\n\n" // no data: not dispatched
	_, st := readAll(t, stream, 16)
	if st.events != 5 || st.windowEvents != 5 || st.windowTicks != 4 {
		t.Errorf("events %d window %d ticks %d, want 5 5 4", st.events, st.windowEvents, st.windowTicks)
	}
	if st.lost != 2 || st.outOfOrder != 1 || st.badIDs != 1 {
		t.Errorf("lost %d outOfOrder %d badIDs %d, want 2 1 1", st.lost, st.outOfOrder, st.badIDs)
	}
	if st.noTimestamp != 3 {
		t.Errorf("noTimestamp %d, want 3", st.noTimestamp)
	}
}

func TestTimestamps(t *testing.T) {
	lg := &loadgen{tsField: "auto"}
	var cache tsCache
	if ns, ok := lg.timestamp([]byte(`{"symbol":"A","ts_ns":1795745414490398182}`), &cache); !ok || ns != 1795745414490398182 {
		t.Errorf("ts_ns: got %d %v", ns, ok)
	}
	iso := []byte(`{"price":1.5,"ts":"2026-11-27T02:03:04.567Z","seq":3}`)
	want := time.Date(2026, 11, 27, 2, 3, 4, 567e6, time.UTC).UnixNano()
	for i := 0; i < 2; i++ { // the second call is served by the cache
		if ns, ok := lg.timestamp(iso, &cache); !ok || ns != want {
			t.Errorf("ts: got %d %v, want %d", ns, ok, want)
		}
	}
	if _, ok := lg.timestamp([]byte(`{"start":"2026-11-27T02:03:04.567Z"}`), &cache); ok {
		t.Error("a bar without ts must have no timestamp")
	}
}

func TestParseDigits(t *testing.T) {
	cases := map[string]bool{"0": true, "42": true, "9223372036854775807": true,
		"9223372036854775808": false, "": false, "-1": false, "1a": false}
	for in, ok := range cases {
		if _, got := parseDigits([]byte(in)); got != ok {
			t.Errorf("parseDigits(%q) ok=%v, want %v", in, got, ok)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(i, int64(i)*int64(time.Millisecond/10)) // 0.1 .. 100 ms
	}
	n, q := h.quantiles([]float64{0.5, 0.99})
	if n != 1000 {
		t.Fatalf("samples %d, want 1000", n)
	}
	for k, want := range []float64{50, 99} {
		if q[k] < want || q[k] > want*1.02 {
			t.Errorf("quantile %d: %.3f ms, want %.1f ms within one 1%% bucket", k, q[k], want)
		}
	}
}
