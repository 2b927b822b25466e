// Command seed-go is the fan-out peer built from the seed design notes: the
// Go + Gin quote-push system that quoteflow descends from (seed chapter 3.2,
// "基于 Goroutine 的广播推送引擎实现").
//
// Shape, as in the notes:
//   - one generator goroutine makes a tick for every symbol every interval;
//   - a hub owns a map of clients and broadcasts every message to each one
//     through the client's buffered `send` channel (256 slots);
//   - the send is non-blocking: a client whose buffer is full is dropped
//     (its channel closed, the handler returns, the connection ends);
//   - every client handler writes each message with Gin's SSE renderer and
//     flushes it at once (`c.SSEvent` + `c.Writer.Flush()` in the notes).
//
// Two deliberate departures from the notes' sketch, both for correctness:
// the hub sends from its own goroutine instead of starting one goroutine per
// client per message (the sketch deletes from the map inside those goroutines,
// a data race), and register/unregister go through channels so only the hub
// goroutine touches the map (seed chapter 3.2, "数据同步机制").
// The event carries an id, so the handler renders sse.Event{Id, Event, Data},
// which is exactly what c.SSEvent does plus the id field.
//
// Wire format per event:  id:N / event:tick / data:{"symbol","price","ts_ns"}.
// Ids start at 1 and are global across symbols, so every subscriber sees a
// contiguous sequence. ts_ns is the wall-clock generation time of the tick.
package main

import (
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-contrib/sse"
	"github.com/gin-gonic/gin"
)

// sendBuffer is the per-client channel capacity of the seed design.
const sendBuffer = 256

type message struct {
	id   string
	data string
}

type client struct {
	send chan message
}

type hub struct {
	clients    map[*client]struct{}
	register   chan *client
	unregister chan *client
	broadcast  chan message
	dropped    uint64
}

func newHub() *hub {
	return &hub{
		clients:    make(map[*client]struct{}),
		register:   make(chan *client),
		unregister: make(chan *client),
		broadcast:  make(chan message, 4096),
	}
}

// run is the only goroutine that reads or writes h.clients.
func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = struct{}{}
		case c := <-h.unregister:
			if _, ok := h.clients[c]; ok {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default:
					// Slow consumer: drop it rather than stall everybody.
					delete(h.clients, c)
					close(c.send)
					atomic.AddUint64(&h.dropped, 1)
				}
			}
		}
	}
}

// generate emits one tick per symbol every interval: a geometric random walk
// per symbol, all ticks of one round stamped with the same generation time.
func generate(h *hub, symbols int, interval time.Duration) {
	names := make([]string, symbols)
	prices := make([]float64, symbols)
	for i := range names {
		names[i] = fmt.Sprintf("SYM%04d", i)
		prices[i] = 100.0
	}
	rng := rand.New(rand.NewSource(42))
	step := 0.2 * math.Sqrt(interval.Seconds()/(252*6.5*3600))
	var id uint64
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	buf := make([]byte, 0, 128)
	for range ticker.C {
		now := time.Now().UnixNano()
		for i, name := range names {
			prices[i] *= math.Exp(step * rng.NormFloat64())
			id++
			buf = buf[:0]
			buf = append(buf, `{"symbol":"`...)
			buf = append(buf, name...)
			buf = append(buf, `","price":`...)
			buf = strconv.AppendFloat(buf, prices[i], 'f', 4, 64)
			buf = append(buf, `,"ts_ns":`...)
			buf = strconv.AppendInt(buf, now, 10)
			buf = append(buf, '}')
			h.broadcast <- message{id: strconv.FormatUint(id, 10), data: string(buf)}
		}
	}
}

func streamHandler(h *hub) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Content-Type", "text/event-stream")
		c.Header("Cache-Control", "no-cache")
		c.Header("Connection", "keep-alive")
		c.Header("X-Accel-Buffering", "no")
		c.Status(http.StatusOK)
		// Headers and the reconnection delay go out at once, so a client
		// knows it is subscribed before the first tick.
		_, _ = c.Writer.WriteString("retry: 3000\n\n")
		c.Writer.Flush()

		cl := &client{send: make(chan message, sendBuffer)}
		h.register <- cl
		done := c.Request.Context().Done()
		for {
			select {
			case m, ok := <-cl.send:
				if !ok {
					return // dropped by the hub as a slow consumer
				}
				c.Render(-1, sse.Event{Id: m.id, Event: "tick", Data: m.data})
				c.Writer.Flush()
			case <-done:
				h.unregister <- cl
				return
			}
		}
	}
}

func main() {
	port := flag.Int("port", 8090, "TCP port to listen on (127.0.0.1)")
	symbols := flag.Int("symbols", 10, "number of symbols ticking")
	intervalMs := flag.Float64("interval-ms", 100, "tick interval in milliseconds")
	flag.Parse()
	if *symbols < 1 || *intervalMs <= 0 {
		log.Fatal("seed-go: --symbols must be >= 1 and --interval-ms > 0")
	}

	gin.SetMode(gin.ReleaseMode)
	h := newHub()
	go h.run()
	go generate(h, *symbols, time.Duration(*intervalMs*float64(time.Millisecond)))

	// gin.New + Recovery instead of gin.Default: the per-request access log
	// of Default would only add noise to the benchmark output.
	r := gin.New()
	r.Use(gin.Recovery())
	r.GET("/stream", streamHandler(h))
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	log.Printf("seed-go listening on http://%s/ (symbols=%d, interval=%gms)", addr, *symbols, *intervalMs)
	log.Fatal(r.Run(addr))
}
