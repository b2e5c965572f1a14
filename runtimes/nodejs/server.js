'use strict';
// Spinlet's Node.js runtime server: runtime protocols v1 and v2 (see runtimes/README.md).
//
// Standard library only (Node 20). It listens on the Unix socket $SPINLET_SOCKET (default
// /run/spinlet/rt.sock), speaks HTTP/1.1 with keep-alive and handles one request at a time:
//
// - GET /health: {"protocol": 1, "protocols": [1, 2], "initialized": bool,
//   "features": ["code_dir"]}. No "layer_dir": a Node function brings its dependencies as
//   node_modules/ inside its package; an /init with a layer_dir is a 400 of type InvalidLayer.
// - POST /init (once): agree on the protocol, start the worker, a child process of this
//   server that loads the function's module from code_dir ("module.func": module.js, .mjs or
//   .cjs; CommonJS or an ES module) and stays warm for every run. A base64 zip ("code") is
//   refused with a 400 of type InvalidPackage: Node's standard library reads no zip, and the
//   node sends code_dir to a server that announces the feature.
// - POST /run: one execution in the worker: one message each way. The worker's fds 1 and 2
//   are this server's pipes, so console.log, process.stdout, fs.writeSync(1, ...) and the
//   output of a child spawned with inherited stdio all land in the execution's log. In v1 the
//   reply is one JSON body (the log capped at log_limit, head and tail); in v2 a chunked
//   stream of log frames (stdout and stderr apart) as the function writes, then the result.
//
// The worker's fds 1 and 2 block when their pipe is full, and it answers a run once the
// handler has settled: by then what the run wrote is in the pipes, which the server reads to
// their current end before it answers in turn. What the pipes bring between runs (a
// background process the function left) is dropped.
//
// A worker that exits (process.exit in the function, a crash) takes the server with it, as
// the Python server's os._exit does: the node sees its container end ("crashed"); in v2 the
// output written before is sent first. Time limits are the control plane's job: it destroys
// the container when a deadline passes; nothing here interrupts the function.
//
// Run as `node /opt/spinlet/server.js`; the worker is the same file, `--worker`.

const fs = require('node:fs');
const http = require('node:http'); // its status phrases only
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { StringDecoder } = require('node:string_decoder');
const { pathToFileURL } = require('node:url');
const util = require('node:util');

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
// How long to wait for the rest of a dead worker's output before the server exits.
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

// --- the worker, seen from the server ----------------------------------------------------------

// A read of a pipe at a run's end (one buffer: the server is one thread).
const READ_SIZE = 65536;
const READ_BUFFER = Buffer.alloc(READ_SIZE);

// One pipe of the worker (its fd 1 or 2), read as data comes; a run gets what comes while it
// is on (`start`) and, at its end, what the pipe still holds (`drain`).
class WorkerPipe {
  constructor(stream, readable, onData) {
    this.stream = stream;
    this.readable = readable;
    this.fd = readable._handle.fd; // the server's end, non-blocking
    this.onData = onData; // (pipe, buffer): output of the current run
    this.capturing = false;
    this.closed = false;
    readable.on('data', (chunk) => this.capturing && this.onData(this, chunk));
    readable.on('end', () => (this.closed = true));
    readable.on('error', () => {});
  }

  start() {
    this.capturing = true;
  }

  // Read what the pipe holds now: the worker's writes block until done, and its answer is sent
  // after them, so once the answer is here, this is the rest of the run's output. What comes
  // later (a background process's) is dropped until the next run starts.
  drain() {
    while (this.readable.readableLength > 0 && this.readable.read() !== null); // paused: held
    while (!this.closed && !this.readable.destroyed) { // a closed fd's number may be reused
      let size;
      try {
        size = fs.readSync(this.fd, READ_BUFFER, 0, READ_SIZE, null);
      } catch (error) {
        break; // EAGAIN: nothing more
      }
      if (size === 0) break;
      this.onData(this, Buffer.from(READ_BUFFER.subarray(0, size)));
    }
    this.capturing = false;
  }
}

// The function's process: started at /init, kept for the server's life.
class Worker {
  constructor(request) {
    this.merged = request.protocol < STREAMING; // v1: fd 2 is fd 1's pipe, order kept
    const env = { ...process.env, ...request.environment };
    const args = [__filename, '--worker'];
    // JSON messages: cheaper than 'advanced' for a run's small ones (the result is JSON text).
    const options = { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env, serialization: 'json' };
    this.child = this.merged
      ? spawn('/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', process.execPath, ...args], options)
      : spawn(process.execPath, args, options);
    this.run = null; // the run (or load) in progress: {onData, onExit, resolve}
    const onData = (pipe, data) => this.run && this.run.onData(pipe.stream, data);
    this.pipes = [new WorkerPipe('stdout', this.child.stdout, onData)];
    if (!this.merged) {
      this.pipes.push(new WorkerPipe('stderr', this.child.stderr, onData));
    } else {
      this.child.stderr.resume(); // only /bin/sh's own errors could come here
    }
    this.child.on('message', (message) => this.answered(message));
    this.child.on('exit', (code, signal) => this.exited(code, signal));
    this.child.on('error', () => this.exited(1, null));
  }

  // Start a run (or the load): `handlers` get its output; resolves with the worker's answer,
  // once all the output written before it is handed on.
  begin(message, handlers) {
    return new Promise((resolve) => {
      this.run = { ...handlers, resolve };
      for (const pipe of this.pipes) pipe.start();
      this.child.send(message);
    });
  }

  answered(message) {
    const run = this.run;
    if (!run) return;
    for (const pipe of this.pipes) pipe.drain();
    this.run = null;
    run.resolve(message);
  }

  pause() {
    for (const pipe of this.pipes) pipe.readable.pause();
  }

  resume() {
    for (const pipe of this.pipes) pipe.readable.resume();
  }

  // The function ended its process (or it crashed): send what it wrote, then end the server,
  // as the Python server (PID 1) ends with a function's os._exit.
  exited(code, signal) {
    if (this.gone) return;
    this.gone = true;
    const run = this.run;
    const finish = () => {
      if (run && run.onExit) run.onExit();
      process.exit(signal ? 128 + (os.constants.signals[signal] || 9) : code || 1);
    };
    if (this.pipes.every((pipe) => pipe.closed)) {
      finish();
      return;
    }
    let left = this.pipes.filter((pipe) => !pipe.closed).length;
    const timer = setTimeout(finish, EXIT_DRAIN_MS);
    for (const pipe of this.pipes) {
      if (pipe.closed) continue;
      pipe.readable.once('close', () => {
        left -= 1;
        if (left === 0) {
          clearTimeout(timer);
          finish();
        }
      });
    }
  }
}

// --- protocol ----------------------------------------------------------------------------------

class Runtime {
  constructor() {
    this.initAttempted = false;
    this.initialized = false;
    this.logLimit = DEFAULT_LOG_LIMIT;
    this.protocol = PROTOCOL;
    this.worker = null;
  }

  health() {
    return {
      protocol: PROTOCOL,
      protocols: PROTOCOLS,
      initialized: this.initialized,
      features: FEATURES,
    };
  }

  async init(body) {
    if (this.initAttempted) {
      const message = 'this runtime has already been initialised';
      throw new RequestError(409, 'AlreadyInitialized', message);
    }
    const request = parseInit(body);
    this.initAttempted = true;
    this.logLimit = request.logLimit;
    this.protocol = request.protocol;
    const refused = loadRefusal(request);
    if (refused) return [400, { error: refused, logs: '' }];
    const started = performance.now();
    const worker = new Worker(request);
    const keeper = new LogKeeper(request.logLimit);
    const answer = await worker.begin(
      { type: 'load', codeDir: request.codeDir, entry: request.entry },
      { onData: (stream, data) => keeper.keep(data) },
    );
    const initMs = performance.now() - started;
    if (answer.error) {
      worker.child.kill('SIGKILL');
      worker.gone = true;
      return [400, { error: answer.error, logs: keeper.log(answer.error.traceback) }];
    }
    this.worker = worker;
    this.initialized = true;
    return [200, { protocol: this.protocol, init_ms: initMs, logs: keeper.log() }];
  }

  checkRun(body) {
    if (!this.initialized) {
      throw new RequestError(409, 'NotInitialized', 'POST /init has not succeeded yet');
    }
    return parseRun(body);
  }

  // One execution (protocol v1): the reply body, its log capped.
  async run(body) {
    const message = this.checkRun(body);
    const keeper = new LogKeeper(this.logLimit);
    const onData = (stream, data) => keeper.keep(data);
    const answer = await this.worker.begin(message, { onData });
    const outcome = settle(answer);
    const traceback = outcome.error ? outcome.error.traceback : '';
    return reply(outcome, `"logs":${JSON.stringify(keeper.log(traceback))}`, false);
  }

  // One execution (protocol v2): frames to `frames` as the function writes, then its result.
  async streamRun(message, frames) {
    const worker = this.worker;
    const answer = await worker.begin(message, {
      onData: (stream, data) => frames.log(stream, data),
      onExit: () => frames.flush(),
    });
    const outcome = settle(answer);
    const traceback = outcome.error ? outcome.error.traceback : '';
    frames.finish(reply(outcome, '"type":"result"', true), traceback);
  }
}

// The worker's answer as an outcome: the result's JSON text, or an error; and the duration.
function settle(answer) {
  if (answer.error) return { error: answer.error, durationMs: answer.durationMs };
  return { json: answer.json, durationMs: answer.durationMs };
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

// The body of a v2 /run reply: a chunk per frame, written as they come. While the node does not
// read, the worker's pipes are not read either: its writes block (bounded memory both sides).
class FrameWriter {
  constructor(response, worker) {
    this.response = response;
    this.worker = worker;
    this.lineEnded = true;
    this.decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    this.paused = false;
    this.resume = () => {
      if (this.paused) {
        this.paused = false;
        worker.resume();
      }
    };
    response.on('drain', this.resume);
    response.on('close', this.resume); // the node went away: the rest is read, and dropped
    this.detach = () => {
      response.off('drain', this.resume);
      response.off('close', this.resume);
    };
  }

  log(stream, data) {
    this.send(stream, this.decoders[stream].write(data));
  }

  send(stream, text) {
    if (!text || this.response.destroyed) return; // the node went away: nothing to send to
    this.lineEnded = text.endsWith('\n');
    const more = this.response.write(logFrame(stream, text, Date.now() / 1000));
    if (!more && !this.paused) {
      this.paused = true;
      this.worker.pause();
    }
  }

  // What the decoders hold back (a character cut at a pipe's end).
  flush() {
    for (const stream of ['stdout', 'stderr']) this.send(stream, this.decoders[stream].end());
  }

  finish(result, traceback) {
    this.flush();
    let data = '';
    if (traceback) {
      const text = this.lineEnded ? traceback : '\n' + traceback;
      data = logFrame('stderr', text, Date.now() / 1000);
    }
    if (!this.response.destroyed) this.response.end(data + result + '\n');
    this.detach();
    this.resume(); // what the pipes bring now is a background process's: dropped
  }
}

// One connection of the node: requests parsed here (the node sends a few plain headers; the
// http module's machinery costs a small function's run again), one at a time, each answered in
// a single write but a streamed /run's.
class Connection {
  constructor(socket, handle) {
    this.socket = socket;
    this.handle = handle; // (request, reply) => Promise: serves one request
    this.buffer = Buffer.alloc(0);
    this.busy = false;
    socket.on('data', (data) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
      this.next();
    });
    socket.on('error', () => {});
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
    this.handle({ method: words[0], url: words[1], body }, reply).finally(() => {
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

// The answer to one request: JSON in one write, or (a v2 /run) chunks, the head with the first.
class Reply {
  constructor(socket, close) {
    this.socket = socket;
    this.close = close;
    this.head = null; // a streamed reply's head, not yet sent
    this.started = false;
  }

  get destroyed() {
    return this.socket.destroyed;
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

  stream(status, type) {
    this.head = this.headOf(status, type, null);
  }

  // A chunk of the streamed body; false when the node reads slower than it is written.
  write(text) {
    return this.socket.write(this.take() + chunk(text));
  }

  end(text) {
    this.socket.write(this.take() + (text ? chunk(text) : '') + '0\r\n\r\n');
  }

  take() {
    const head = this.head || '';
    this.head = null;
    this.started = true;
    return head;
  }

  on(event, listener) {
    this.socket.on(event, listener);
  }

  off(event, listener) {
    this.socket.off(event, listener);
  }
}

const chunk = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;

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
      const [status, answer] = await runtime.init(parseJson(request.body));
      reply.json(status, answer);
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
  reply.stream(200, 'application/x-ndjson');
  await runtime.streamRun(message, new FrameWriter(reply, runtime.worker));
}

// One request at a time, whatever the connection (the node sends one at a time).
function serve(socketPath) {
  const runtime = new Runtime();
  let queue = Promise.resolve();
  const handle = (request, reply) => (queue = queue.then(() => dispatch(runtime, request, reply)));
  const server = net.createServer((socket) => new Connection(socket, handle));
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

function worker() {
  // libuv makes a pipe non-blocking, for fs.writeSync(1, ...) too (the file description is
  // shared): a write to a full pipe would then be cut short or fail with EAGAIN. Blocking, a
  // write waits for the server to read, as a process's write to its stdout does elsewhere.
  for (const stream of [process.stdout, process.stderr]) {
    if (stream._handle && typeof stream._handle.setBlocking === 'function') {
      stream._handle.setBlocking(true);
    }
  }
  let handler = null;
  let settleRun = null; // ends the run in progress with an error (an uncaught one)
  const logger = makeLogger((text) => process.stderr.write(text));

  // The answer follows the run's output: fds 1 and 2 block, so what the function wrote is in
  // the pipes once written; the streams are waited for all the same, should they hold any.
  const flushed = (stream) =>
    new Promise((resolve) => (stream.writableLength ? stream.once('drain', resolve) : resolve()));
  async function end(answer) {
    if (process.stdout.writableLength || process.stderr.writableLength) {
      await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    }
    process.send(answer);
  }

  const uncaught = (error) => {
    if (settleRun) {
      settleRun(error);
    } else {
      process.stderr.write(describeError(error).traceback);
    }
  };
  process.on('uncaughtException', uncaught);
  process.on('unhandledRejection', uncaught);
  process.on('disconnect', () => process.exit(0)); // the server is gone: so is its worker

  process.on('message', async (message) => {
    if (message.type === 'load') {
      const loaded = await loadHandler(message.codeDir, message.entry);
      handler = loaded.handler || null;
      await end(loaded.error ? { error: loaded.error } : { ok: true });
      return;
    }
    const started = performance.now();
    let outcome;
    try {
      const result = await new Promise((resolve, reject) => {
        settleRun = reject;
        Promise.resolve()
          .then(() => handler(message.input, makeContext(message.context, logger)))
          .then(resolve, reject);
      });
      outcome = serialise(result);
    } catch (error) {
      outcome = { error: describeError(error) };
    }
    settleRun = null;
    outcome.durationMs = performance.now() - started;
    await end(outcome);
  });
}

if (require.main !== module) {
  module.exports = { LogKeeper, fitLog }; // for tests
} else if (process.argv[2] === '--worker') {
  worker();
} else {
  serve(process.env.SPINLET_SOCKET || DEFAULT_SOCKET);
}
