// Drives `annals serve` with the official KurrentDB Node.js client: append (the client's
// BatchAppend path), read forwards and backwards, subscribe to a stream (catch-up, then live)
// and to $all with a stream-name filter. Prints one JSON summary line; exits non-zero on any
// mismatch. Usage: ANNALS_ADDR=127.0.0.1:2113 node check.mjs
import { randomUUID } from "node:crypto";
import {
  KurrentDBClient,
  jsonEvent,
  BACKWARDS,
  END,
  FORWARDS,
  NO_STREAM,
  START,
  streamNameFilter,
} from "@kurrent/kurrentdb-client";

const addr = process.env.ANNALS_ADDR;
if (!addr) {
  console.error("set ANNALS_ADDR to the server's HOST:PORT");
  process.exit(2);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Reads `count` events from a subscription in one pass, calling `each` after every event. */
async function take(subscription, count, what, each = async () => {}) {
  const out = [];
  const iterate = (async () => {
    for await (const resolved of subscription) {
      out.push(resolved.event);
      await each(out.length);
      if (out.length === count) break;
    }
  })();
  await withTimeout(iterate, 15000, what);
  return out;
}

const client = KurrentDBClient.connectionString`kurrentdb://${addr}?tls=false`;
const tag = randomUUID().replaceAll("-", "");
const stream = `nodecheck${tag}-1`;

try {
  const first = await client.appendToStream(
    stream,
    [0, 1, 2].map((n) => jsonEvent({ type: "NodeChecked", data: { n } })),
    { streamState: NO_STREAM },
  );
  check(first.success === true, "append succeeded");
  check(first.nextExpectedRevision === 2n, `next expected revision 2, got ${first.nextExpectedRevision}`);

  let conflict = null;
  try {
    await client.appendToStream(stream, jsonEvent({ type: "Late", data: {} }), { streamState: NO_STREAM });
  } catch (error) {
    conflict = error;
  }
  check(conflict !== null, "a no-stream append to an existing stream fails");
  check(conflict.type === "wrong-expected-version", `wrong-expected-version, got ${conflict && conflict.type}`);

  const forwards = [];
  for await (const resolved of client.readStream(stream, { fromRevision: START, direction: FORWARDS })) {
    forwards.push(resolved.event);
  }
  check(forwards.length === 3, `3 events read, got ${forwards.length}`);
  check(forwards.every((e, i) => e.revision === BigInt(i) && e.data.n === i), "revisions and data in order");
  check(forwards[0].type === "NodeChecked", "event type kept");

  const backwards = [];
  for await (const resolved of client.readStream(stream, { fromRevision: END, direction: BACKWARDS, maxCount: 2 })) {
    backwards.push(Number(resolved.event.revision));
  }
  check(JSON.stringify(backwards) === "[2,1]", `backwards [2,1], got ${JSON.stringify(backwards)}`);

  const streamSub = client.subscribeToStream(stream, { fromRevision: START });
  const allSub = client.subscribeToAll({ fromPosition: START, filter: streamNameFilter({ prefixes: [`nodecheck${tag}`] }) });
  // Catch up on the three events, then append a fourth and receive it live.
  const followed = await take(streamSub, 4, "stream subscription", async (n) => {
    if (n === 3) await client.appendToStream(stream, jsonEvent({ type: "NodeLive", data: { n: 3 } }));
  });
  check(followed.map((e) => Number(e.revision)).join() === "0,1,2,3", "catch-up then live, in order");
  check(followed[3].type === "NodeLive", "live event delivered");

  const fromAll = await take(allSub, 4, "$all subscription");
  check(fromAll.every((e) => e.streamId === stream), "the $all filter keeps only this stream");
  check(fromAll[3].type === "NodeLive", "$all subscription sees the live event");

  await streamSub.unsubscribe();
  await allSub.unsubscribe();
  console.log(JSON.stringify({ ok: true, appended: 4, read: forwards.length, subscribed: followed.length, all: fromAll.length }));
  await client.dispose();
  process.exit(0);
} catch (error) {
  console.error(error && error.stack ? error.stack : error);
  await client.dispose().catch(() => {});
  process.exit(1);
}
