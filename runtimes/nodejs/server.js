'use strict';
// Spinlet's Node.js runtime server: runtime protocols v1 and v2 (see runtimes/README.md).
//
// Standard library only (Node 20). It listens on the Unix socket $SPINLET_SOCKET (default
// /run/spinlet/rt.sock), speaks HTTP/1.1 with keep-alive and handles one request at a time:
//
// - GET /health: {"protocol": 1, "protocols": [1, 2], "initialized": bool,
//   "features": ["code_dir"]}. No "layer_dir": a Node function brings its dependencies as
//   node_modules/ inside its package; an /init with a layer_dir is a 400 of type InvalidLayer.
// - POST /init (once): agree on the protocol (in v1, fd 2 becomes fd 1's pipe: one log, in the
//   order of the writes), set the function's environment in process.env, and load the
//   function's module from code_dir ("module.func": module.js, .mjs or .cjs; CommonJS or an ES
//   module). A base64 zip ("code") is refused with a 400 of type InvalidPackage: Node's
//   standard library reads no zip, and the node sends code_dir to a server that announces the
//   feature.
// - POST /run: one execution, the handler called in this thread (no other process, no message
//   to another thread for a short run). console.log, process.stdout, fs.writeSync(1, ...) and
//   the output of a child spawned with inherited stdio all land in the pipes that are fds 1 and
//   2 (see Capture). In v1 the reply is one JSON body (the log capped at log_limit, head and
//   tail); in v2 a chunked stream of log frames (stdout and stderr apart), then the result.
//
// A function that exits (process.exit) ends the server with it, as the Python server's os._exit
// does: the node sees its container end ("crashed"); in v2 the output written before is sent
// first. Time limits are the control plane's job: it destroys the container when a deadline
// passes; nothing here interrupts the function.
//
// Run by init.sh as `node server.js --fifos OUT ERR` with its fds 1 and 2 the named pipes OUT
// and ERR; run as `node server.js`, it makes them and starts itself so. The reader threads are
// the same file.

const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
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
// V8's flags of the server (as init.sh gives them): a hot function is optimised after less of
// its bytecode has run (V8's default budget suits long-running servers: a function's warm runs
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

// --- the function's output ---------------------------------------------------------------------

// Fds 1 and 2 are named pipes (init.sh makes them; in v1, fd 2 becomes fd 1's pipe at /init).
// A run's output is what its pipes bring between two markers this server writes to each: one
// as the run begins (what comes before it was written between runs, and is dropped) and one once
// its handler has settled (fds 1 and 2 block when their pipe is full, so what the function
// wrote is in the pipe by then).
//
// Who reads them: a short run's, this thread itself, once the run is over (non-blocking reads to
// the end marker: no other thread is woken, nothing is waited for). A reader thread takes the
// pipes over when a run lasts longer than TAKEOVER_MS: from then on it reads them (a function
// that writes much without yielding waits for a reader a few milliseconds at most) and, in v2,
// writes the frames to the node's connection itself as the function writes; the run's end then
// waits for it to read to the end markers. Between runs, the pipes are not read: a background
// process the function left waits once its pipe is full, until the next run begins (what it
// wrote meanwhile is dropped).
const READ_SIZE = 65536;
const TAKEOVER_MS = 3;
const KEEP = 1; // a run's output goes to the server's thread (/init, a v1 run): a log is kept
const STREAM = 2; // frames to the connection (a v2 run)
// A pipe's phase in its state's PHASE slot, with the run's number: RUN_PHASES * number + phase.
const IDLE = 0; // between runs (no run has begun yet)
const ACTIVE = 1; // a run is in progress, the pipe not read yet
const TAKEN = 2; // its reader thread reads it, to the run's end marker
const ENDED = 3; // the run ended before its reader took the pipe: this thread reads it
const RUN_PHASES = 4;
const RUNS = 2 ** 28; // run numbers wrap around (an Int32 holds RUN_PHASES * RUNS)
// Slots of a pipe's state (Int32Array on shared memory).
const PHASE = 0;
const DONE = 1; // the last run its reader read to its end
const DEAD = 2; // 1 once the reader has stopped (its pipe closed or broken)
const READY = 3; // 1 once the reader runs
const MODE = 4; // KEEP or STREAM
const SOCKET = 5; // the connection's fd (STREAM)
const CLOSE = 6; // 1 when the reply says Connection: close
const PARKED = 7; // 1 while the reader waits for a run to begin (then a run's begin wakes it)
const PIPES = 8; // how many pipes the run has (v1: 1, fd 2 being fd 1's pipe)
const WAKE = 9; // waited on while the pipes are empty (woken as the run ends)
const NAP_MAX_MS = 8;
// Slots of the state the readers and the server share.
const LOCK = 0; // 1 while a thread writes to the connection
const GONE = 1; // 1 once a write to the connection failed: the node went away
const LINE_ENDED = 2; // whether the last frame sent ended its line
const NAP = 3; // waited on for a millisecond when the connection is full
const QUIT = 4; // 1 when the process exits: the readers end (it waits for its threads)
const HEAD_SENT = 5; // 1 once the reply's head is written

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

// One run's output in the reads of one pipe: what comes between its two markers.
class Scanner {
  constructor(marker, number) {
    this.begin = Buffer.from(`${marker}B${number}]\0`, 'latin1');
    this.end = Buffer.from(`${marker}E${number}]\0`, 'latin1');
    this.started = false;
    this.ended = false;
    this.carry = null;
  }

  // The parts of `data` (the next read) that are the run's, copied when `copy` (the buffer is
  // read into again).
  feed(data, copy) {
    const parts = [];
    if (this.ended) return parts;
    if (this.carry) {
      data = Buffer.concat([this.carry, data]);
      this.carry = null;
    }
    if (!this.started) {
      const at = data.indexOf(this.begin);
      if (at < 0) {
        this.hold(data, this.begin);
        return parts;
      }
      this.started = true;
      data = data.subarray(at + this.begin.length);
    }
    const at = data.indexOf(this.end);
    if (at >= 0) {
      this.ended = true;
      data = data.subarray(0, at);
    } else {
      data = data.subarray(0, data.length - this.hold(data, this.end));
    }
    if (data.length) parts.push(copy ? Buffer.from(data) : data);
    return parts;
  }

  hold(data, marker) {
    const held = markerStart(data, marker);
    if (held) this.carry = Buffer.from(data.subarray(data.length - held));
    return held;
  }
}

// The reader thread: parked until a run outlasts TAKEOVER_MS, then it reads the run's pipes to
// their end markers (non-blocking reads; while they are empty, it naps, from 0.25 ms doubling
// up to NAP_MAX_MS, woken at once when the run ends).
function readerThread() {
  const { fds, streams, marker, state, shared, port } = workerData;
  const buffer = Buffer.alloc(READ_SIZE);
  Atomics.store(state, READY, 1);
  Atomics.notify(state, READY);
  let seen = -1; // the run it saw begin, TAKEOVER_MS or more ago once it wakes
  try {
    while (!Atomics.load(shared, QUIT)) {
      const value = Atomics.load(state, PHASE);
      if (value % RUN_PHASES !== ACTIVE) { // until a run begins (told, as it is parked)
        Atomics.store(state, PARKED, 1);
        Atomics.wait(state, PHASE, value);
        Atomics.store(state, PARKED, 0);
      } else if (value !== seen) { // not told of the next runs: it looks again after a while
        seen = value;
        Atomics.wait(state, PHASE, value, TAKEOVER_MS);
      } else if (
        Atomics.compareExchange(state, PHASE, value, value - ACTIVE + TAKEN) === value
      ) {
        readRun((value - ACTIVE) / RUN_PHASES);
      }
    }
  } finally {
    Atomics.store(state, DEAD, 1);
    Atomics.notify(state, DONE);
  }

  function readRun(number) {
    const mode = Atomics.load(state, MODE);
    const socket = Atomics.load(state, SOCKET);
    const head = replyHead(200, 'application/x-ndjson', null, Atomics.load(state, CLOSE) === 1);
    const pipes = fds.slice(0, Atomics.load(state, PIPES)).map((fd, index) => ({
      fd,
      stream: streams[index],
      scanner: new Scanner(marker, number),
      decoder: new StringDecoder('utf8'),
    }));
    const send = (stream, text) => {
      if (!text) return;
      const frame = chunk(logFrame(stream, text, Date.now() / 1000));
      writeAll(shared, socket, frame, head, text.endsWith('\n'));
    };
    let nap = 0;
    while (pipes.some((pipe) => !pipe.scanner.ended)) {
      if (Atomics.load(shared, QUIT)) return;
      let read = false;
      for (const pipe of pipes) {
        if (pipe.scanner.ended) continue;
        let size;
        try {
          size = fs.readSync(pipe.fd, buffer, 0, READ_SIZE, null);
        } catch (error) {
          if (error.code === 'EAGAIN' || error.code === 'EINTR') continue;
          throw error;
        }
        if (size === 0) return; // no writer left (cannot happen: fds 1 and 2 are)
        read = true;
        for (const part of pipe.scanner.feed(buffer.subarray(0, size), mode === KEEP)) {
          if (mode === KEEP) port.postMessage(part);
          else send(pipe.stream, pipe.decoder.write(part));
        }
        if (pipe.scanner.ended && mode === STREAM) send(pipe.stream, pipe.decoder.end());
      }
      if (read) {
        nap = 0;
      } else {
        nap = nap ? Math.min(nap * 2, NAP_MAX_MS) : 0.25;
        Atomics.wait(state, WAKE, 0, nap);
      }
    }
    Atomics.store(state, DONE, number);
    Atomics.notify(state, DONE);
  }
}

// The function's fds 1 and 2 (their named pipes `fifos`, removed once open).
class Capture {
  constructor(fifos) {
    this.marker = `\0[spinlet: run ${crypto.randomBytes(16).toString('hex')} `;
    this.shared = new Int32Array(new SharedArrayBuffer(32));
    this.state = new Int32Array(new SharedArrayBuffer(64));
    this.number = 0;
    this.keeper = null;
    this.active = false;
    this.socket = null;
    this.head = '';
    this.port = null;
    this.buffer = Buffer.alloc(READ_SIZE);
    const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
    this.pipes = fifos.map((fifo, index) => {
      const pipe = {
        target: index + 1, // fd 1 or 2
        stream: index ? 'stderr' : 'stdout',
        // Non-blocking descriptions of the pipe: read by this thread or the reader's, never
        // both at once.
        read: fs.openSync(fifo, O_RDONLY | O_NONBLOCK),
        write: fs.openSync(fifo, O_WRONLY | O_NONBLOCK),
        scanner: null,
      };
      fs.rmSync(fifo, { force: true });
      return pipe;
    });
    this.used = this.pipes; // v1: fd 1's only (fd 2 is made fd 1's pipe)
    Atomics.store(this.state, PIPES, this.used.length);
  }

  // Start the reader thread (needed only by runs that outlast TAKEOVER_MS).
  start() {
    const { port1, port2 } = new MessageChannel();
    const workerData = {
      fds: this.pipes.map((pipe) => pipe.read),
      streams: this.pipes.map((pipe) => pipe.stream),
      marker: this.marker,
      state: this.state,
      shared: this.shared,
      port: port2,
    };
    const thread = new Thread(__filename, { workerData, transferList: [port2] });
    thread.unref();
    port1.on('message', (data) => this.keeper && this.keeper.keep(data));
    port1.unref();
    this.port = port1;
  }

  // Once the reader thread runs (it opens nothing after that).
  async ready() {
    while (!Atomics.load(this.state, READY)) {
      const waited = Atomics.waitAsync(this.state, READY, 0, 1000);
      if (waited.async) await waited.value;
    }
  }

  // Protocol v1: fd 2 becomes fd 1's pipe, so the log keeps the order of the writes to both.
  // Node has no dup2: fd 2 is closed and fd 1's pipe opened again, which takes the lowest free
  // fd (nothing else opens a file meanwhile: no function is loaded, the reader runs).
  async merge() {
    await this.ready();
    fs.closeSync(2);
    const fd = fs.openSync('/proc/self/fd/1', fs.constants.O_WRONLY);
    if (fd !== 2) throw new Error(`fd 2 could not be made fd 1's pipe (got fd ${fd})`);
    this.used = this.pipes.slice(0, 1);
    Atomics.store(this.state, PIPES, 1);
  }

  // A run (or the load) begins: its output is kept (`socket` null) or sent as frames to the
  // connection's `socket` fd, after the reply's `head` (which says Connection: close if `close`).
  begin(limit, socket = null, head = '', close = false) {
    const { state } = this;
    this.number = (this.number % (RUNS - 1)) + 1;
    this.active = true;
    this.keeper = socket === null ? new LogKeeper(limit) : null;
    this.socket = socket;
    this.head = head;
    for (const slot of [GONE, HEAD_SENT]) Atomics.store(this.shared, slot, 0);
    Atomics.store(this.shared, LINE_ENDED, 1);
    Atomics.store(state, MODE, socket === null ? KEEP : STREAM);
    Atomics.store(state, SOCKET, socket === null ? -1 : socket);
    Atomics.store(state, CLOSE, close ? 1 : 0);
    let marked = true;
    for (const pipe of this.used) {
      pipe.scanner = new Scanner(this.marker, this.number);
      if (!this.put(pipe, pipe.scanner.begin, null)) marked = false;
    }
    const base = this.number * RUN_PHASES;
    if (marked) {
      Atomics.store(state, PHASE, base + ACTIVE);
      if (Atomics.load(state, PARKED)) Atomics.notify(state, PHASE);
    } else { // a pipe kept full by a background process: the reader reads the run from its start
      Atomics.store(state, PHASE, base + TAKEN);
      Atomics.notify(state, PHASE);
      for (const pipe of this.used) this.writeMarker(pipe, pipe.scanner.begin);
    }
  }

  // Write `marker` to the pipe without blocking; while it is full, read it (what is read goes
  // to `out`, or is dropped). False if it stays full.
  put(pipe, marker, out) {
    for (let tries = 0; tries < 64; tries += 1) {
      try {
        fs.writeSync(pipe.write, marker);
        return true;
      } catch (error) {
        if (error.code !== 'EAGAIN' && error.code !== 'EINTR') throw error;
      }
      this.readSome(pipe, out);
    }
    return false;
  }

  // One non-blocking read of the pipe, its run's parts to `out` (or dropped). False when empty.
  readSome(pipe, out) {
    let read;
    try {
      read = fs.readSync(pipe.read, this.buffer, 0, READ_SIZE, null);
    } catch (error) {
      if (error.code === 'EAGAIN' || error.code === 'EINTR') return false;
      throw error;
    }
    const parts = pipe.scanner.feed(this.buffer.subarray(0, read), true);
    if (out !== null) out.push(...parts);
    return read > 0;
  }

  writeMarker(pipe, marker) {
    try {
      fs.writeSync(pipe.target, marker); // blocking: the reader reads the pipe
    } catch {}
  }

  // The run is over: once what the function's streams hold is written, mark each pipe's end
  // and read it there. Returns the kept log (KEEP), or the frames still to send (STREAM).
  async end() {
    for (const stream of [process.stdout, process.stderr]) {
      if (stream.writableLength) await new Promise((resolve) => stream.once('drain', resolve));
    }
    return this.endNow(Infinity);
  }

  endNow(within) {
    const { state } = this;
    const until = performance.now() + within;
    const active = this.number * RUN_PHASES + ACTIVE;
    const outputs = [];
    if (Atomics.compareExchange(state, PHASE, active, active - ACTIVE + ENDED) === active) {
      for (const pipe of this.used) { // the reader did not take the run: read here
        const parts = [];
        if (this.put(pipe, pipe.scanner.end, parts)) {
          while (!pipe.scanner.ended && this.readSome(pipe, parts));
        }
        outputs.push([pipe.stream, parts]);
      }
    } else {
      for (const pipe of this.used) this.writeMarker(pipe, pipe.scanner.end);
      Atomics.notify(state, WAKE);
      while (Atomics.load(state, DONE) !== this.number && !Atomics.load(state, DEAD)) {
        const left = until - performance.now();
        if (left <= 0) break;
        Atomics.wait(state, DONE, Atomics.load(state, DONE), Math.min(left, 1000));
      }
    }
    this.active = false;
    const keeper = this.keeper;
    this.keeper = null;
    if (keeper) {
      if (this.port !== null) {
        for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
          keeper.keep(m.message);
        }
      }
      for (const [, parts] of outputs) for (const part of parts) keeper.keep(part);
      return keeper;
    }
    let frames = '';
    for (const [stream, parts] of outputs) {
      if (!parts.length) continue;
      const text = Buffer.concat(parts).toString('utf8');
      frames += chunk(logFrame(stream, text, Date.now() / 1000));
      Atomics.store(this.shared, LINE_ENDED, text.endsWith('\n') ? 1 : 0);
    }
    return frames;
  }

  // End the reader thread, which a process waits for as it exits.
  quit() {
    Atomics.store(this.shared, QUIT, 1);
    Atomics.notify(this.state, PHASE);
    Atomics.notify(this.state, WAKE);
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
    const started = now();
    const [request, refusal] = this.checkInit(body);
    if (refusal) return refusal;
    if (request.protocol < STREAMING) await this.capture.merge();
    Object.assign(process.env, request.environment);
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
  async streamRun(message, head, fd, close) {
    this.capture.begin(this.logLimit, fd, head, close);
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

const now = () => performance.timeOrigin + performance.now();

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
    this.busy = false;
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
    this.buffer = this.buffer.subarray(end + 4 + length);
    this.busy = true;
    const reply = new Reply(this.socket, close);
    const request = { method: words[0], url: words[1], body, connection: this };
    this.handle(request, reply).finally(() => {
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

// The status phrases of the replies this server makes.
const PHRASES = {
  200: 'OK',
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  411: 'Length Required',
  413: 'Payload Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
};

// A reply's head: `length` null for a chunked body.
function replyHead(status, type, length, close) {
  let head = `HTTP/1.1 ${status} ${PHRASES[status] || 'Unknown'}\r\nContent-Type: ${type}\r\n`;
  head += length === null ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${length}\r\n`;
  if (close) head += 'Connection: close\r\n';
  return head + '\r\n';
}

// The answer to one request: JSON in one write (a v2 /run's is written by streamRun).
class Reply {
  constructor(socket, close) {
    this.socket = socket;
    this.close = close;
    this.started = false;
  }

  headOf(status, type, length) {
    return replyHead(status, type, length, this.close);
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
  await runtime.streamRun(message, head, socket._handle.fd, reply.close);
}

// One request at a time, whatever the connection (the node sends one at a time).
function queued(runtime) {
  let queue = Promise.resolve();
  return (request, reply) => (queue = queue.then(() => dispatch(runtime, request, reply)));
}

// The server: its fds 1 and 2 are the named pipes `fifos` (init.sh makes them), each read as
// Capture says; the handler runs in this thread.
function serve(socketPath, fifos) {
  // libuv makes a pipe non-blocking, for fs.writeSync(1, ...) too (the file description is
  // shared): a write to a full pipe would then be cut short or fail with EAGAIN. Blocking, a
  // write waits for the pipe's reader, as a process's write to its stdout does elsewhere.
  for (const stream of [process.stdout, process.stderr]) {
    if (stream._handle && typeof stream._handle.setBlocking === 'function') {
      stream._handle.setBlocking(true);
    }
  }
  const capture = new Capture(fifos);
  const runtime = new Runtime(capture);
  const handle = queued(runtime);
  const uncaught = (error) => runtime.uncaught(error);
  process.on('uncaughtException', uncaught);
  process.on('unhandledRejection', uncaught);
  process.on('exit', () => runtime.exiting());
  const server = net.createServer((socket) => new Connection(socket, handle));
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  try {
    if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath); // an earlier server's
  } catch {}
  const oldUmask = process.umask(0o111); // connectable by the host (another uid)
  server.listen(socketPath, () => {
    process.umask(oldUmask);
    fs.chmodSync(socketPath, 0o666);
    capture.start(); // once listening: the first /init does not wait for it
    warmUp(runtime, handle);
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

// Go once through what the first /init and /run do, before they come (a stem cell waits for its
// function): V8 compiles a function the first time it is called, and Node readies its module
// loader on the first file it loads. A /health to no socket, a module of a temporary
// directory loaded and forgotten, and a run of each kind (a log kept, frames) begun and ended.
function warmUp(runtime, handle) {
  const socket = new EventEmitter();
  Object.assign(socket, { destroyed: false, write: () => true, end: () => {}, destroy() {} });
  new Connection(socket, handle, Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), '.spinlet-'));
  try {
    const file = path.join(directory, 'warm.js');
    fs.writeFileSync(file, 'module.exports.main = (event) => event;\n');
    const handler = require(file).main;
    delete require.cache[file];
    const message = parseRun({ input: { warm: [1, 'up'] }, execution_id: 'warm-up' });
    makeContext(message.context, runtime.logger);
    const outcome = serialise(handler(message.input));
    outcome.durationMs = 0;
    runtime.capture.begin(DEFAULT_LOG_LIMIT);
    runtime.capture.endNow(Infinity).log();
    runtime.capture.begin(DEFAULT_LOG_LIMIT, -1, '');
    runtime.capture.endNow(Infinity);
    parseJson(Buffer.from(JSON.stringify(message)));
    reply(outcome, '"type":"result"', true);
  } finally {
    fs.rmSync(directory, { recursive: true, force: true });
  }
}

// Run without init.sh (as `node server.js`): make the pipes and start the server with them as
// its fds 1 and 2, passing on its exit status and the signals that end it.
function launch() {
  const { spawn, spawnSync } = require('node:child_process');
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'spinlet-'));
  const fifos = ['out', 'err'].map((name) => path.join(directory, name));
  const made = spawnSync('mkfifo', ['-m', '600', ...fifos]);
  if (made.status !== 0) throw new Error(`mkfifo failed: ${made.stderr || made.error}`);
  const fds = fifos.map((fifo) => fs.openSync(fifo, fs.constants.O_RDWR));
  const child = spawn(process.execPath, [...V8_FLAGS, __filename, '--fifos', ...fifos], {
    stdio: ['ignore', ...fds],
  });
  for (const fd of fds) fs.closeSync(fd);
  child.on('exit', (code, signal) => {
    fs.rmSync(directory, { recursive: true, force: true });
    process.exit(signal ? 128 + os.constants.signals[signal] : code);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => child.kill(signal));
}

// --- the function --------------------------------------------------------------------------

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
} else if (process.argv[2] === '--fifos') {
  serve(process.env.SPINLET_SOCKET || DEFAULT_SOCKET, process.argv.slice(3, 5));
} else {
  launch();
}
