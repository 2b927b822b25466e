// Reads COUNT "tick" events from URL with npm `eventsource` (which reconnects by itself
// and sends Last-Event-ID), printing one JSON line per event, then exits.
import { EventSource } from "eventsource";

const [url, count] = process.argv.slice(2);
let n = 0;
const es = new EventSource(url);
es.addEventListener("tick", (e) => {
  process.stdout.write(JSON.stringify({ id: e.lastEventId, event: e.type, data: e.data }) + "\n");
  n += 1;
  if (n >= Number(count)) {
    es.close();
    process.exit(0);
  }
});
es.onerror = (e) => process.stderr.write(`error readyState=${es.readyState} ${e.message ?? ""}\n`);
