'use strict';
// Spinlet's Node.js runtime server: runtime protocols v1 and v2 (see runtimes/README.md).
//
// Standard library only (Node 20). It listens on the Unix socket $SPINLET_SOCKET (default
// /run/spinlet/rt.sock), speaks HTTP/1.1 with keep-alive and handles one request at a time:
//
// - GET /health: {"protocol": 1, "protocols": [1, 2], "initialized": bool,
//   "features": ["code_dir"]}. No "layer_dir": a Node function brings its dependencies as
//   node_modules/ inside its package; an /init with a layer_dir is a 400 of type InvalidLayer.
// - POST /init (once): agree on the protocol, then hand the function's process (started with
//   the server, or, in v1, now), whose fds 1 and 2 are named pipes (one pipe in v1), the
//   function's environment, this connection and every other: it
//   loads the function's module from code_dir ("module.func": module.js, .mjs or .cjs;
//   CommonJS or an ES module) and serves /init's answer and every request after it. A base64
//   zip ("code") is refused with a 400 of type InvalidPackage: Node's standard library reads no
//   zip, and the node sends code_dir to a server that announces the feature.
// - POST /run: one execution, the handler called in the function's process itself (no message
//   to another process). console.log, process.stdout, fs.writeSync(1, ...) and the output of a
//   child spawned with inherited stdio all land in its pipes, each read by a thread of its own
//   with blocking reads (a function that writes much without yielding never waits for the
//   server's thread). In v1 the reply is one JSON body (the log capped at log_limit, head and
//   tail); in v2 a chunked stream of log frames (stdout and stderr apart), which the reader
//   threads write to the connection as the function writes, then the result.
//
// Fds 1 and 2 block when their pipe is full. Once the handler has settled, what it wrote is in
// the pipes; the server writes a marker to each, and the reader threads read to it: the end of
// the run's output. What the pipes bring between runs (a background process the function left)
// is dropped.
//
// A function that exits (process.exit) ends the server with it, as the Python server's os._exit
// does: the node sees its container end ("crashed"); in v2 the output written before is sent
// first. Time limits are the control plane's job: it destroys the container when a deadline
// passes; nothing here interrupts the function.
//
// Run as `node /opt/spinlet/server.js`; the function's process is the same file, `--function`
// (with its pipes' names), and so are the reader threads.

const fs = require('node:fs');
const http = require('node:http'); // its status phrases only
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const { StringDecoder } = require('node:string_decoder');
const { pathToFileURL } = require('node:url');
const util = require('node:util');
const {
  Worker: Thread,
  MessageChannel,
  isMainThread,
  receiveMessageOnPort,
  workerData,
} = require('node:worker_threads');

const PROTOCOL = 1;
const PROTOCOLS = [1, 2];
const STREAMING = 2;
const FEATURES = ['code_dir'];
const DEFAULT_SOCKET = '/run/spinlet/rt.sock';
const DEFAULT_LOG_LIMIT = 1024 * 1024;
const MAX_BODY = 1024 * 1024 * 1024;
// Limits of a request's head: how many headers, and its whole length.
const MAX_HEADERS = 100;
const MAX_HEAD = 65536 * 4;
// V8's flags for the function's process: a hot function is optimised after less of its
// bytecode has run (V8's default budget suits long-running servers: a function's warm runs
// would take twice as long for its first thousand calls or more).
const V8_FLAGS = ['--interrupt-budget=8192'];
// How long a function that exits waits for its output to be sent (v2).
const EXIT_DRAIN_MS = 200;
const TRUNCATION_MARKER = (dropped) => `\n[spinlet: log truncated, ${dropped} bytes dropped]\n`;

// --- errors -----------------------------------------------------------------------------------

class RequestError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }

  asError() {
    return { type: this.type, message: this.message, traceback: '' };
  }
}

const badRequest = (message) => new RequestError(400, 'BadRequest', message);

// --- the log cap (as runtimes/python/server.py's fit_log and spinlet.logcap) -------------------

// Where the head of `data` ends: after the last whole line in its first `room` bytes, or after
// the last whole character when they hold no line's end.
function headEnd(data, room) {
  const end = Math.min(room, data.length);
  if (end <= 0) return 0;
  const newline = data.lastIndexOf(0x0a, end - 1);
  if (newline >= 0) return newline + 1;
  let start = end - 1; // the last character's first byte, within 4 bytes
  while (start > 0 && end - start < 4 && (data[start] & 0xc0) === 0x80) start -= 1;
  const lead = data[start];
  const size = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return start + size > end ? start : end;
}

// Where the tail of `data` starts: at the first whole line in its last `room` bytes, or at the
// first whole character when no line starts there.
function tailStart(data, room) {
  let start = data.length - room;
  if (start <= 0) return 0;
  if (data[start - 1] === 0x0a) return start;
  const newline = data.indexOf(0x0a, start);
  if (newline >= 0 && newline < data.length - 1) return newline + 1;
  const begin = start;
  while (start < data.length && start - begin < 3 && (data[start] & 0xc0) === 0x80) start += 1;
  return start;
}

// A log of `head`, then `gap` bytes not kept, then `tail`, in at most `limit` bytes.
function fitLog(head, tail, gap, limit) {
  if (!gap && head.length + tail.length <= limit) {
    return Buffer.concat([head, tail]).toString('utf8');
  }
  if (!gap) head = tail = Buffer.concat([head, tail]);
  const half = Math.floor(limit / 2);
  const first = head.subarray(0, headEnd(head, half));
  const last = tail.subarray(tailStart(tail, limit - half));
  const total = gap ? head.length + gap + tail.length : head.length;
  const dropped = total - first.length - last.length;
  return first.toString('utf8') + TRUNCATION_MARKER(dropped) + last.toString('utf8');
}

// What a run (v1) or /init writes, kept as its head and tail within `limit` bytes.
class LogKeeper {
  constructor(limit) {
    this.limit = limit;
    this.headRoom = Math.floor(limit / 2);
    this.tailRoom = limit - this.headRoom + 1; // the tail's half, and the byte before it
    this.head = [];
    this.headLength = 0;
    this.tail = [];
    this.tailLength = 0;
    this.seen = 0;
  }

  keep(chunk) {
    this.seen += chunk.length;
    const room = this.headRoom - this.headLength;
    if (room > 0) {
      const part = chunk.subarray(0, room);
      this.head.push(part);
      this.headLength += part.length;
      chunk = chunk.subarray(room);
    }
    if (!chunk.length) return;
    this.tail.push(chunk);
    this.tailLength += chunk.length;
    if (this.tailLength > 2 * this.tailRoom) { // trimmed now and then, not on every chunk
      const whole = Buffer.concat(this.tail);
      const kept = whole.subarray(whole.length - this.tailRoom);
      this.tail = [kept];
      this.tailLength = kept.length;
    }
  }

  // The log, then `ending` (a traceback) on a line of its own, in at most `limit` bytes.
  log(ending = '') {
    const head = Buffer.concat(this.head);
    let tail = Buffer.concat(this.tail);
    const gap = this.seen - head.length - tail.length;
    if (ending) {
      const last = tail.length ? tail[tail.length - 1] : head.length ? head[head.length - 1] : -1;
      const sep = last !== -1 && last !== 0x0a ? '\n' : '';
      tail = Buffer.concat([tail, Buffer.from(sep + ending, 'utf8')]);
    }
    return fitLog(head, tail, gap, this.limit);
  }
}

// --- streamed output (protocol v2) -------------------------------------------------------------

const logFrame = (stream, text, t) =>
  `{"type":"log","stream":"${stream}","data":${JSON.stringify(text)},"t":${t}}\n`;

// The result (or error) reply as JSON text: `member` (a preformatted "name":value) first, or
// after the result or error, as the Python server writes it.
function reply(outcome, member, first) {
  const body = outcome.error
    ? `"error":${JSON.stringify(outcome.error)}`
    : `"result":${outcome.json}`;
  const [a, b] = first ? [member, body] : [body, member];
  return `{${a},${b},"duration_ms":${outcome.durationMs}}`;
}

// --- the function's output, read in its own process ---------------------------------------------

// A reader thread per pipe (one in v1, where fd 2 is fd 1's pipe; two in v2) reads it with
// blocking reads, so a function that writes much without yielding (fs.writeSync, a busy loop)
// never blocks for want of a reader: in v2 the thread sends the frames itself, on the node's
// connection, while the function runs. A run ends with a marker the server writes to each pipe
// once the handler has settled (after the function's own writes, which are done by then, fds 1
// and 2 blocking): the thread reads to it, and so has the whole run.
const READ_SIZE = 65536;
const KEEP = 1; // a run's output goes to the server's thread (/init, a v1 run): a log is kept
const STREAM = 2; // frames to the connection (a v2 run)
// Slots of a reader's state (Int32Array on shared memory).
const DONE = 0; // the last run the reader read to its end
const DEAD = 1; // 1 once the reader has stopped (its pipe closed or broken)
// Slots of the state the readers and the server share.
const LOCK = 0; // 1 while a thread writes to the connection
const GONE = 1; // 1 once a write to the connection failed: the node went away
const LINE_ENDED = 2; // whether the last frame sent ended its line
const NAP = 3; // waited on for a millisecond when the connection is full
const QUIT = 4; // 1 when the process exits: the readers end (it waits for its threads)
const ENDING = 5; // 1 once the run's handler has settled: its end is coming
const HEAD_SENT = 6; // 1 once the reply's head is written
const SEQUENCE = 7; // frames numbered in the order they were read, across the pipes
// A frame waits up to FRAME_DELAY_MS for the run to end, and is then sent with its result, in
// one write (the node wakes once for a short run), unless FRAME_BATCH characters wait already.
const FRAME_DELAY_MS = 2;
const FRAME_BATCH = 65536;

function lock(shared) {
  while (Atomics.compareExchange(shared, LOCK, 0, 1) !== 0) Atomics.wait(shared, LOCK, 1, 5);
}

function unlock(shared) {
  Atomics.store(shared, LOCK, 0);
  Atomics.notify(shared, LOCK, 1);
}

// Write all of `text` to the connection's socket `fd` (non-blocking: wait while it is full),
// one thread at a time, after the reply's `head` if it is not written yet; nothing more once
// the node has gone.
function writeAll(shared, fd, text, head = '', lineEnded = null) {
  lock(shared);
  try {
    if (Atomics.load(shared, GONE)) return;
    if (head && !Atomics.load(shared, HEAD_SENT)) {
      Atomics.store(shared, HEAD_SENT, 1);
      text = head + text;
    }
    const data = Buffer.from(text, 'utf8');
    let offset = 0;
    while (offset < data.length) {
      try {
        offset += fs.writeSync(fd, data, offset, data.length - offset);
      } catch (error) {
        if ((error.code === 'EAGAIN' || error.code === 'EINTR') && !Atomics.load(shared, QUIT)) {
          Atomics.wait(shared, NAP, 0, 1);
          continue;
        }
        Atomics.store(shared, GONE, 1);
        return;
      }
    }
    if (lineEnded !== null) Atomics.store(shared, LINE_ENDED, lineEnded ? 1 : 0);
  } finally {
    unlock(shared);
  }
}

const chunk = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;

// How many bytes at the end of `data` could start a marker (held back for the next read).
function markerStart(data, marker) {
  for (let size = Math.min(marker.length - 1, data.length); size > 0; size -= 1) {
    if (data.subarray(data.length - size).equals(marker.subarray(0, size))) return size;
  }
  return 0;
}

// The reader thread of one pipe: what it reads goes to the run in progress (told by the
// server's messages on `port`), what comes between runs is dropped.
function readerThread() {
  const { fd, stream, marker: text, state, shared, port } = workerData;
  const marker = Buffer.from(text, 'latin1');
  const buffer = Buffer.alloc(READ_SIZE);
  let run = null; // {number, mode, socket, head}: the run being read, null between runs
  let decoder = null;
  let carry = null;
  let frames = []; // [sequence, frame, whether it ends its line]: read, not yet sent
  let size = 0;
  const take = (data) => {
    if (run === null) {
      const next = receiveMessageOnPort(port);
      if (!next) return;
      run = next.message;
      decoder = new StringDecoder('utf8');
    }
    if (!data.length) return;
    if (run.mode === KEEP) {
      port.postMessage(Buffer.from(data)); // a copy: the buffer is read into again
    } else {
      send(decoder.write(data));
    }
  };
  const send = (textRead) => {
    if (!textRead) return;
    const frame = logFrame(stream, textRead, Date.now() / 1000);
    frames.push([Atomics.add(shared, SEQUENCE, 1), frame, textRead.endsWith('\n')]);
    size += frame.length;
  };
  // Send the frames read unless the run ends soon (the server's thread then sends them).
  const flush = () => {
    if (run === null || run.mode !== STREAM || !frames.length) return;
    if (size < FRAME_BATCH && Atomics.wait(shared, ENDING, 0, FRAME_DELAY_MS) !== 'timed-out') {
      return;
    }
    const text = frames.map(([, frame]) => chunk(frame)).join('');
    const lineEnded = frames[frames.length - 1][2];
    frames = [];
    size = 0;
    writeAll(shared, run.socket, text, run.head, lineEnded);
  };
  const end = () => {
    take(Buffer.alloc(0)); // a run with no output has begun all the same
    if (run === null) return; // a marker of a run that is over (cannot happen)
    if (run.mode === STREAM) {
      send(decoder.end());
      port.postMessage(frames); // the server's thread sends them, with the result
      frames = [];
      size = 0;
    }
    Atomics.store(state, DONE, run.number);
    Atomics.notify(state, DONE);
    run = null;
  };
  try {
    for (;;) {
      let read;
      try {
        read = fs.readSync(fd, buffer, 0, READ_SIZE, null);
      } catch (error) {
        if (error.code === 'EAGAIN' || error.code === 'EINTR') continue;
        throw error;
      }
      if (read === 0 || Atomics.load(shared, QUIT)) break;
      let data = buffer.subarray(0, read);
      if (carry) {
        data = Buffer.concat([carry, data]);
        carry = null;
      }
      for (;;) {
        const at = data.indexOf(marker);
        if (at < 0) break;
        take(data.subarray(0, at));
        end();
        data = data.subarray(at + marker.length);
      }
      const held = markerStart(data, marker);
      take(data.subarray(0, data.length - held));
      if (held) carry = Buffer.from(data.subarray(data.length - held));
      flush();
    }
  } finally {
    Atomics.store(state, DEAD, 1);
    Atomics.notify(state, DONE);
  }
}

// The function's fds 1 and 2, read by reader threads.
class Capture {
  constructor(fifos) {
    this.marker = `\0[spinlet: run ended ${crypto.randomBytes(16).toString('hex')}]\0`;
    this.shared = new Int32Array(new SharedArrayBuffer(32));
    this.number = 0;
    this.keeper = null;
    this.active = false;
    const streams = fifos.length === 1 ? [[1, 'stdout']] : [[1, 'stdout'], [2, 'stderr']];
    this.readers = streams.map(([target, stream], index) => {
      // Its own description of the pipe, blocking (libuv makes fds 1 and 2 non-blocking).
      const fd = fs.openSync(fifos[index], 'r');
      const state = new Int32Array(new SharedArrayBuffer(8));
      const { port1, port2 } = new MessageChannel();
      const marker = this.marker;
      const workerData = { fd, stream, marker, state, shared: this.shared, port: port2 };
      const thread = new Thread(__filename, { workerData, transferList: [port2] });
      thread.unref();
      port1.on('message', (data) => this.keeper && this.keeper.keep(data));
      port1.unref();
      return { target, state, port: port1, thread };
    });
  }

  // A run (or the load) begins: its output is kept (`socket` null) or sent as frames to the
  // connection's `socket` fd.
  begin(limit, socket = null, head = '') {
    this.number += 1;
    this.active = true;
    this.keeper = socket === null ? new LogKeeper(limit) : null;
    this.socket = socket;
    this.head = head;
    const run = { number: this.number, mode: socket === null ? KEEP : STREAM, socket, head };
    for (const slot of [GONE, ENDING, HEAD_SENT]) Atomics.store(this.shared, slot, 0);
    Atomics.store(this.shared, LINE_ENDED, 1);
    for (const reader of this.readers) reader.port.postMessage(run);
  }

  // The run is over: once what the function's streams hold is written, mark each pipe's end
  // and wait for the readers to reach it. Returns the kept log (KEEP).
  async end() {
    for (const stream of [process.stdout, process.stderr]) {
      if (stream.writableLength) await new Promise((resolve) => stream.once('drain', resolve));
    }
    return this.endNow(Infinity);
  }

  endNow(within) {
    const until = performance.now() + within;
    Atomics.store(this.shared, ENDING, 1);
    Atomics.notify(this.shared, ENDING);
    for (const reader of this.readers) {
      try {
        fs.writeSync(reader.target, this.marker);
      } catch {}
    }
    for (const reader of this.readers) {
      const { state } = reader;
      while (Atomics.load(state, DONE) !== this.number && !Atomics.load(state, DEAD)) {
        const left = until - performance.now();
        if (left <= 0) break;
        Atomics.wait(state, DONE, Atomics.load(state, DONE), Math.min(left, 1000));
      }
    }
    this.active = false;
    const keeper = this.keeper;
    this.keeper = null;
    const frames = [];
    for (const reader of this.readers) {
      for (let m = receiveMessageOnPort(reader.port); m; m = receiveMessageOnPort(reader.port)) {
        if (keeper) keeper.keep(m.message);
        else frames.push(...m.message);
      }
    }
    if (keeper) return keeper;
    // The frames the readers left to this thread: in the order they were read.
    frames.sort((a, b) => a[0] - b[0]);
    if (frames.length) Atomics.store(this.shared, LINE_ENDED, frames[frames.length - 1][2] ? 1 : 0);
    return frames.map(([, frame]) => chunk(frame)).join('');
  }

  // End the reader threads, which a process waits for as it exits: each wakes to a byte.
  quit() {
    Atomics.store(this.shared, QUIT, 1);
    for (const reader of this.readers) {
      try {
        fs.writeSync(reader.target, '\n');
      } catch {}
    }
  }

  lineEnded() {
    return Atomics.load(this.shared, LINE_ENDED) === 1;
  }

  // Write to the run's connection, after its head if it is not written yet.
  write(text) {
    writeAll(this.shared, this.socket, text, this.head);
  }
}

// --- protocol ----------------------------------------------------------------------------------

// The runtime as the function's process serves it: the handler runs here, in this thread.
class Runtime {
  constructor(capture) {
    this.capture = capture;
    this.initAttempted = false;
    this.initialized = false;
    this.logLimit = DEFAULT_LOG_LIMIT;
    this.protocol = PROTOCOL;
    this.handler = null;
    this.initStarted = null; // when the front server took /init (performance.timeOrigin based)
    this.settleRun = null; // ends the run in progress with an error (an uncaught one)
    this.logger = makeLogger((text) => process.stderr.write(text));
  }

  health() {
    return {
      protocol: PROTOCOL,
      protocols: PROTOCOLS,
      initialized: this.initialized,
      features: FEATURES,
    };
  }

  // The request of /init, or why it is refused (its second time, a zip or a layer).
  checkInit(body) {
    if (this.initAttempted) {
      const message = 'this runtime has already been initialised';
      throw new RequestError(409, 'AlreadyInitialized', message);
    }
    const request = parseInit(body);
    this.initAttempted = true;
    this.logLimit = request.logLimit;
    this.protocol = request.protocol;
    const refused = loadRefusal(request);
    return [request, refused && [400, { error: refused, logs: '' }]];
  }

  async init(body) {
    const [request, refusal] = this.checkInit(body);
    if (refusal) return refusal;
    const started = this.initStarted ?? now();
    this.capture.begin(request.logLimit);
    const loaded = await loadHandler(request.codeDir, request.entry);
    const keeper = await this.capture.end();
    const initMs = now() - started;
    if (loaded.error) {
      return [400, { error: loaded.error, logs: keeper.log(loaded.error.traceback) }];
    }
    this.handler = loaded.handler;
    this.initialized = true;
    return [200, { protocol: this.protocol, init_ms: initMs, logs: keeper.log() }];
  }

  checkRun(body) {
    if (!this.initialized) {
      throw new RequestError(409, 'NotInitialized', 'POST /init has not succeeded yet');
    }
    return parseRun(body);
  }

  // The handler's outcome: the result's JSON text, or an error; and the duration.
  async call(message) {
    const started = performance.now();
    let outcome;
    try {
      const result = await new Promise((resolve, reject) => {
        this.settleRun = reject;
        Promise.resolve()
          .then(() => this.handler(message.input, makeContext(message.context, this.logger)))
          .then(resolve, reject);
      });
      outcome = serialise(result);
    } catch (error) {
      outcome = { error: describeError(error) };
    }
    this.settleRun = null;
    outcome.durationMs = performance.now() - started;
    return outcome;
  }

  // An exception thrown outside the handler: it ends the run in progress, if any.
  uncaught(error) {
    if (this.settleRun) {
      this.settleRun(error);
    } else {
      process.stderr.write(describeError(error).traceback);
    }
  }

  // One execution (protocol v1): the reply body, its log capped.
  async run(body) {
    const message = this.checkRun(body);
    this.capture.begin(this.logLimit);
    const outcome = await this.call(message);
    const keeper = await this.capture.end();
    const traceback = outcome.error ? outcome.error.traceback : '';
    return reply(outcome, `"logs":${JSON.stringify(keeper.log(traceback))}`, false);
  }

  // One execution (protocol v2): the reply's head, frames (sent by the reader threads) as the
  // function writes, then its result, all on the connection's socket `fd`.
  async streamRun(message, head, fd) {
    this.capture.begin(this.logLimit, fd, head);
    const outcome = await this.call(message);
    let data = await this.capture.end(); // the frames still to send
    if (outcome.error) {
      const traceback = outcome.error.traceback;
      const text = this.capture.lineEnded() ? traceback : '\n' + traceback;
      data += chunk(logFrame('stderr', text, Date.now() / 1000));
    }
    const result = reply(outcome, '"type":"result"', true);
    this.capture.write(data + chunk(result + '\n') + '0\r\n\r\n');
  }

  // The function ends its process (process.exit): what it wrote goes first, in v2.
  exiting() {
    if (this.capture.active) {
      const left = this.capture.endNow(EXIT_DRAIN_MS);
      if (this.capture.socket !== null) this.capture.write(left);
    }
    this.capture.quit();
  }
}

// The runtime before /init, in the server's first process: /init starts the function's
// process, whose fds 1 and 2 are pipes (one in v1), and hands it the connections.
class FrontRuntime extends Runtime {
  constructor() {
    super(null);
    this.child = null;
    this.spare = null; // a function's process started ahead, for a v2 /init
    this.onHandOver = () => {}; // (connection): hand over the others too
  }

  // Start a function's process before /init (the container may be a stem cell): /init then
  // hands it the function's environment instead of waiting for a process to start.
  prepare() {
    const spare = startFunction(false, process.env);
    spare.child.on('exit', () => {
      if (this.spare === spare) this.spare = null;
    });
    spare.child.on('error', () => {});
    this.spare = spare;
  }

  async init(body, connection) {
    const started = now();
    const [request, refusal] = this.checkInit(body);
    if (refusal) return refusal;
    const merged = request.protocol < STREAMING;
    let starting = this.spare;
    this.spare = null;
    let environment = request.environment;
    if (starting === null || merged || starting.child.exitCode !== null) {
      if (starting !== null) starting.stop();
      starting = startFunction(merged, { ...process.env, ...request.environment });
      environment = {};
    }
    const child = starting.child;
    child.on('exit', (code, signal) => {
      process.exit(signal ? 128 + (os.constants.signals[signal] || 9) : code || 1);
    });
    child.on('error', () => process.exit(1));
    if (child.exitCode !== null) process.exit(1);
    await starting.ready;
    this.child = child;
    this.handOver(connection, { initStarted: started, environment });
    this.onHandOver(connection);
    return null; // the function's process answers
  }

  handOver(connection, extra = {}) {
    connection.handedOver = true;
    const socket = connection.socket;
    socket.pause();
    const parts = [connection.pending];
    if (socket.readableLength) parts.push(socket.read()); // what came since: all of it, paused
    const data = Buffer.concat(parts).toString('base64');
    this.child.send({ type: 'connection', data, ...extra }, socket);
  }
}

const now = () => performance.timeOrigin + performance.now();

// Start a function's process, its fds 1 and 2 named pipes opened for reading and writing (so
// never waiting for the other end), which its reader threads open again by name; in v1
// (`merged`) fd 2 is fd 1's pipe. `ready` resolves once its readers are on.
function startFunction(merged, env) {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'spinlet-'));
  const fifos = (merged ? ['out'] : ['out', 'err']).map((name) => path.join(directory, name));
  const made = spawnSync('mkfifo', ['-m', '600', ...fifos]);
  if (made.status !== 0) throw new Error(`mkfifo failed: ${made.stderr || made.error}`);
  const fds = fifos.map((fifo) => fs.openSync(fifo, fs.constants.O_RDWR));
  const options = { stdio: ['ignore', fds[0], fds[fds.length - 1], 'ipc'], env };
  const child = spawn(process.execPath, [...V8_FLAGS, __filename, '--function', ...fifos], options);
  for (const fd of fds) fs.closeSync(fd);
  const removed = () => fs.rmSync(directory, { recursive: true, force: true });
  const ready = new Promise((resolve) => child.once('message', resolve)).then(removed);
  const stop = () => {
    child.kill('SIGKILL');
    removed();
  };
  return { child, ready, stop };
}

// Why /init cannot load anything: a base64 zip, or a dependency layer (neither is supported).
function loadRefusal(request) {
  if (request.codeDir === null) {
    return {
      type: 'InvalidPackage',
      message:
        'this runtime loads code from "code_dir" only (it announces the code_dir feature); ' +
        'a base64 zip ("code") is not extracted here',
      traceback: '',
    };
  }
  if (request.layerDir !== null) {
    return {
      type: 'InvalidLayer',
      message:
        'this runtime does not load dependency layers: bring node_modules/ inside the package',
      traceback: '',
    };
  }
  return null;
}

const isInt = (value) => Number.isInteger(value);

function parseInit(body) {
  if (!isObject(body)) throw badRequest('the body must be a JSON object');
  const code = body.code ?? null;
  const codeDir = body.code_dir ?? null;
  const layerDir = body.layer_dir ?? null;
  const entry = body.entry ?? 'main.main';
  const environment = body.environment || {};
  const logLimit = body.log_limit ?? DEFAULT_LOG_LIMIT;
  const asked = body.protocol ?? null;
  if ((code === null) === (codeDir === null)) {
    throw badRequest('either "code_dir" (a directory) or "code" (a base64 zip) is required');
  }
  for (const [name, directory] of [['code_dir', codeDir], ['layer_dir', layerDir]]) {
    if (directory !== null && !(typeof directory === 'string' && directory.startsWith('/'))) {
      throw badRequest(`"${name}" must be an absolute path`);
    }
  }
  if (code !== null && typeof code !== 'string') throw badRequest('"code" must be a base64 zip');
  if (typeof entry !== 'string') throw badRequest('"entry" must be a string "module.function"');
  if (!isObject(environment) || !Object.values(environment).every((v) => typeof v === 'string')) {
    throw badRequest('"environment" must be an object of strings');
  }
  if (!isInt(logLimit) || logLimit < 0) {
    throw badRequest('"log_limit" must be a non-negative integer');
  }
  if (asked !== null && (!isInt(asked) || asked < 1)) {
    throw badRequest('"protocol" must be a positive integer (the highest the node speaks)');
  }
  return {
    codeDir,
    layerDir,
    entry,
    environment,
    logLimit,
    protocol: asked === null ? PROTOCOL : agreedProtocol(asked),
  };
}

function agreedProtocol(asked) {
  const common = PROTOCOLS.filter((version) => version <= asked);
  return common.length ? Math.max(...common) : Math.min(...PROTOCOLS);
}

function parseRun(body) {
  if (!isObject(body)) throw badRequest('the body must be a JSON object');
  const deadline = body.deadline ?? null;
  const version = body.function_version ?? 0;
  if (deadline !== null && typeof deadline !== 'number') {
    throw badRequest('"deadline" must be a number (unix seconds)');
  }
  if (!isInt(version)) throw badRequest('"function_version" must be an integer');
  const strings = {};
  for (const key of ['execution_id', 'function_id', 'function_name']) {
    const value = body[key] || '';
    if (typeof value !== 'string') throw badRequest(`"${key}" must be a string`);
    strings[key] = value;
  }
  return {
    type: 'run',
    input: body.input === undefined ? null : body.input,
    context: { ...strings, function_version: version, deadline },
  };
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

// --- HTTP --------------------------------------------------------------------------------------

// One connection of the node: requests parsed here (the node sends a few plain headers; the
// http module's machinery costs a small function's run again), one at a time, each answered in
// a single write but a streamed /run's.
class Connection {
  constructor(socket, handle, buffer = Buffer.alloc(0)) {
    this.socket = socket;
    this.handle = handle; // (request, reply) => Promise: serves one request
    this.buffer = buffer;
    this.pending = buffer; // from the start of the request being served (to hand it over)
    this.busy = false;
    this.handedOver = false; // to the function's process
    socket.on('data', (data) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
      this.next();
    });
    socket.on('error', () => {});
    if (buffer.length) this.next();
  }

  // Serve the next request once it is whole, unless one is being served.
  next() {
    if (this.busy || this.socket.destroyed) return;
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buffer.length > MAX_HEAD) this.refuse(431, 'the request head is too long');
      return;
    }
    const [line, ...lines] = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const words = line.split(' ');
    if (words.length !== 3 || !['HTTP/1.0', 'HTTP/1.1'].includes(words[2])) {
      this.refuse(400, `bad request syntax (${JSON.stringify(line)})`);
      return;
    }
    if (lines.length > MAX_HEADERS) {
      this.refuse(431, 'too many headers');
      return;
    }
    const headers = {};
    for (const header of lines) {
      const colon = header.indexOf(':');
      if (colon > 0) {
        headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
      }
    }
    const connection = (headers.connection || '').toLowerCase();
    const close =
      connection === 'close' || (words[2] === 'HTTP/1.0' && connection !== 'keep-alive');
    if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
      this.refuse(411, 'send a Content-Length', 'LengthRequired');
      return;
    }
    const raw = headers['content-length'] || '0';
    if (!/^[0-9]+$/.test(raw)) {
      this.refuse(400, 'invalid Content-Length');
      return;
    }
    const length = Number(raw);
    if (length > MAX_BODY) {
      this.refuse(413, 'the request body is too large', 'TooLarge');
      return;
    }
    if (this.buffer.length < end + 4 + length) return; // the rest of the body is to come
    const body = this.buffer.subarray(end + 4, end + 4 + length);
    this.pending = this.buffer;
    this.buffer = this.buffer.subarray(end + 4 + length);
    this.busy = true;
    const reply = new Reply(this.socket, close);
    const request = { method: words[0], url: words[1], body, connection: this };
    this.handle(request, reply).finally(() => {
      if (this.handedOver) return;
      this.pending = this.buffer;
      this.busy = false;
      if (reply.close) this.socket.end();
      else this.next();
    });
  }

  // A request that cannot be read: a JSON error, and the connection closed.
  refuse(status, message, type = 'BadRequest') {
    this.busy = true;
    const reply = new Reply(this.socket, true);
    reply.json(status, { error: { type, message, traceback: '' } });
    this.socket.end();
  }
}

// The answer to one request: JSON in one write (a v2 /run's is written by streamRun).
class Reply {
  constructor(socket, close) {
    this.socket = socket;
    this.close = close;
    this.started = false;
  }

  headOf(status, type, length) {
    const phrase = http.STATUS_CODES[status] || 'Unknown';
    let head = `HTTP/1.1 ${status} ${phrase}\r\nContent-Type: ${type}\r\n`;
    head += length === null ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${length}\r\n`;
    if (this.close) head += 'Connection: close\r\n';
    return head + '\r\n';
  }

  json(status, body) {
    this.send(status, JSON.stringify(body));
  }

  send(status, text) {
    this.started = true;
    const body = Buffer.from(text, 'utf8');
    const head = Buffer.from(this.headOf(status, 'application/json', body.length), 'latin1');
    this.socket.write(Buffer.concat([head, body]));
  }
}

function parseJson(body) {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new RequestError(400, 'BadRequest', `the body is not valid JSON: ${error.message}`);
  }
}

async function dispatch(runtime, request, reply) {
  const method = request.method;
  const where = request.url.split('?')[0];
  try {
    if (where === '/health' && method === 'GET') {
      reply.json(200, runtime.health());
    } else if (where === '/init' && method === 'POST') {
      const answer = await runtime.init(parseJson(request.body), request.connection);
      if (answer) reply.json(...answer);
    } else if (where === '/run' && method === 'POST') {
      await run(runtime, parseJson(request.body), reply);
    } else if (['/health', '/init', '/run'].includes(where)) {
      throw new RequestError(405, 'MethodNotAllowed', `${method} ${where} is not allowed`);
    } else {
      throw new RequestError(404, 'NotFound', `no such endpoint: ${where}`);
    }
  } catch (error) {
    if (reply.started) {
      reply.socket.destroy(); // mid-body: nothing can be said on this connection
    } else if (error instanceof RequestError) {
      reply.json(error.status, { error: error.asError() });
    } else { // a bug here must not take the server down
      reply.json(500, { error: describeError(error) });
    }
  }
}

async function run(runtime, body, reply) {
  if (runtime.protocol < STREAMING) {
    reply.send(200, await runtime.run(body));
    return;
  }
  const message = runtime.checkRun(body); // refusals are JSON, before any frame
  const socket = reply.socket;
  if (socket.writableLength) await new Promise((resolve) => socket.once('drain', resolve));
  reply.started = true;
  const head = reply.headOf(200, 'application/x-ndjson', null);
  await runtime.streamRun(message, head, socket._handle.fd);
}

// One request at a time, whatever the connection (the node sends one at a time).
function queued(runtime) {
  let queue = Promise.resolve();
  return (request, reply) => (queue = queue.then(() => dispatch(runtime, request, reply)));
}

// The server's first process: /health, then /init, which starts the function's process and
// hands it this connection and every other, now and later.
function serve(socketPath) {
  const runtime = new FrontRuntime();
  runtime.prepare();
  const handle = queued(runtime);
  const connections = new Set();
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    if (runtime.child) {
      runtime.handOver({ socket, pending: Buffer.alloc(0) });
      return;
    }
    const connection = new Connection(socket, handle);
    connections.add(connection);
    socket.on('close', () => connections.delete(connection));
    socket.resume();
  });
  runtime.onHandOver = (first) => {
    for (const connection of connections) {
      if (connection !== first && !connection.socket.destroyed) runtime.handOver(connection);
    }
  };
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  try {
    if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath); // an earlier server's
  } catch {}
  const oldUmask = process.umask(0o111); // connectable by the host (another uid)
  server.listen(socketPath, () => {
    process.umask(oldUmask);
    fs.chmodSync(socketPath, 0o666);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      try {
        fs.unlinkSync(socketPath);
      } catch {}
      process.exit(128 + os.constants.signals[signal]);
    });
  }
}

// The function's process: its fds 1 and 2 are the pipes its reader threads read; it serves
// the connections the first process hands it, the first with /init.
function functionProcess(fifos) {
  // libuv makes a pipe non-blocking, for fs.writeSync(1, ...) too (the file description is
  // shared): a write to a full pipe would then be cut short or fail with EAGAIN. Blocking, a
  // write waits for the reader thread, as a process's write to its stdout does elsewhere.
  for (const stream of [process.stdout, process.stderr]) {
    if (stream._handle && typeof stream._handle.setBlocking === 'function') {
      stream._handle.setBlocking(true);
    }
  }
  const runtime = new Runtime(new Capture(fifos));
  const handle = queued(runtime);
  const uncaught = (error) => runtime.uncaught(error);
  process.on('uncaughtException', uncaught);
  process.on('unhandledRejection', uncaught);
  process.on('exit', () => runtime.exiting());
  process.on('disconnect', () => process.exit(0)); // the first process is gone: so is this one
  process.on('message', (message, socket) => {
    if (message.type !== 'connection' || !socket) return;
    if (message.initStarted) {
      runtime.initStarted = message.initStarted;
      Object.assign(process.env, message.environment); // when started ahead, without them
    }
    new Connection(socket, handle, Buffer.from(message.data, 'base64'));
  });
  process.send({ type: 'ready' });
}

// --- the worker: the function's process --------------------------------------------------------

// {type, message, traceback} of what the function threw; the traceback is its stack, without
// this file's frames nor Node's own.
function describeError(error) {
  if (error instanceof Error || (error && typeof error.stack === 'string')) {
    const type = (error.constructor && error.constructor.name) || error.name || 'Error';
    const lines = String(error.stack || `${type}: ${error.message}`).split('\n');
    const kept = lines.filter(
      (line, index) =>
        index === 0 || !(line.includes(__filename) || /[( ]node:internal\//.test(line)),
    );
    return { type, message: String(error.message ?? ''), traceback: kept.join('\n') + '\n' };
  }
  const type =
    error === null ? 'null' : (error.constructor && error.constructor.name) || typeof error;
  const shown = util.inspect(error);
  return { type, message: String(error), traceback: `Uncaught ${shown}\n` };
}

function loadError(type, message) {
  return { type, message, traceback: '' };
}

// The module file of `module` in `codeDir` ("a" or "dir/a", or a dotted "dir.a").
function findModule(codeDir, module) {
  const names = [module];
  if (module.includes('.')) names.push(module.split('.').join('/'));
  for (const name of names) {
    for (const extension of ['.js', '.mjs', '.cjs']) {
      const file = path.join(codeDir, name + extension);
      const inside = file.startsWith(codeDir + path.sep);
      if (inside && fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
        return file;
      }
    }
  }
  return null;
}

async function loadHandler(codeDir, entry) {
  const dot = entry.lastIndexOf('.');
  const module = entry.slice(0, dot);
  const name = entry.slice(dot + 1);
  if (dot <= 0 || !name) {
    const message = `entry ${JSON.stringify(entry)} is not of the form module.function`;
    return { error: loadError('InvalidEntry', message) };
  }
  if (!fs.statSync(codeDir, { throwIfNoEntry: false })?.isDirectory()) {
    return { error: loadError('InvalidPackage', `the code directory ${codeDir} does not exist`) };
  }
  const file = findModule(codeDir, module);
  if (file === null) {
    return {
      error: loadError(
        'ModuleNotFoundError',
        `module ${JSON.stringify(module)} of entry ${JSON.stringify(entry)} ` +
          'is not in the package ' +
          `(no ${module}.js, ${module}.mjs or ${module}.cjs)`,
      ),
    };
  }
  let exports;
  try {
    if (file.endsWith('.mjs')) {
      exports = await import(pathToFileURL(file).href);
    } else {
      try {
        exports = require(file);
      } catch (error) {
        if (!error || error.code !== 'ERR_REQUIRE_ESM') throw error;
        exports = await import(pathToFileURL(file).href); // .js of a "type": "module" package
      }
    }
  } catch (error) {
    return { error: describeError(error) };
  }
  let handler = exports == null ? undefined : exports[name];
  const inner = exports && exports.default;
  if (handler === undefined && inner != null && typeof inner === 'object') {
    handler = inner[name]; // a CommonJS module's exports, imported as an ES module's default
  }
  if (handler === undefined) {
    return {
      error: loadError(
        'EntryNotFound',
        `module ${JSON.stringify(module)} has no function ${JSON.stringify(name)}`,
      ),
    };
  }
  if (typeof handler !== 'function') {
    return { error: loadError('EntryNotFound', `${JSON.stringify(entry)} is not a function`) };
  }
  return { handler };
}

function makeLogger(write) {
  const line = (level) => (...args) => {
    const time = new Date().toISOString().replace('T', ' ').replace('Z', '');
    write(`${time} ${level} ${util.format(...args)}\n`);
  };
  const warning = line('WARNING');
  return { debug: () => {}, info: line('INFO'), warn: warning, warning, error: line('ERROR') };
}

function makeContext(fields, logger) {
  const deadline = fields.deadline;
  const remaining = () =>
    deadline === null ? Infinity : Math.max(0, deadline - Date.now() / 1000);
  return {
    executionId: fields.execution_id,
    execution_id: fields.execution_id,
    functionId: fields.function_id,
    function_id: fields.function_id,
    functionName: fields.function_name,
    function_name: fields.function_name,
    functionVersion: fields.function_version,
    function_version: fields.function_version,
    deadline,
    remainingTime: remaining,
    remaining_time: remaining,
    logger,
  };
}

// The result as JSON text (undefined is null), or a ResultNotSerializable error.
function serialise(result) {
  let json;
  try {
    json = JSON.stringify(result === undefined ? null : result);
  } catch (error) {
    const message = `the result is not JSON-serialisable: ${error && error.message}`;
    return { error: { type: 'ResultNotSerializable', message, traceback: '' } };
  }
  if (json === undefined) {
    const message = `the result is not JSON-serialisable: a ${typeof result} is not JSON`;
    return { error: { type: 'ResultNotSerializable', message, traceback: '' } };
  }
  return { json };
}

if (!isMainThread) {
  readerThread();
} else if (require.main !== module) {
  module.exports = { LogKeeper, fitLog }; // for tests
} else if (process.argv[2] === '--function') {
  functionProcess(process.argv.slice(3));
} else {
  serve(process.env.SPINLET_SOCKET || DEFAULT_SOCKET);
}
