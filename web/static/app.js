// The chat page: sends the conversation to the server and renders the
// answer as its pieces arrive, over either transport the settings pick:
// server-sent events (POST v1/chat/completions with stream: true) or a
// WebSocket (v1/ws). Either way a stream whose connection drops is resumed
// where it stopped, and Stop cancels the generation on the server. Model
// output is only ever put in the page as text (Text nodes, textContent),
// never as HTML.

import { SSEParser, interpret, errorMessage } from './stream.js';

const $ = (id) => document.getElementById(id);
const el = {
  model: $('model'),
  notice: $('model-notice'),
  status: $('status'),
  messages: $('messages'),
  empty: $('empty'),
  composer: $('composer'),
  prompt: $('prompt'),
  send: $('send'),
  stop: $('stop'),
  clear: $('clear'),
  settings: $('settings'),
  system: $('system'),
  temperature: $('temperature'),
  topP: $('top-p'),
  maxTokens: $('max-tokens'),
  seed: $('seed'),
  apiKey: $('api-key'),
  transport: $('transport'),
  tps: $('tps'),
  ttft: $('ttft'),
  tokens: $('tokens'),
  finish: $('finish'),
};

// The conversation as the API sees it: {role, content} of user and
// assistant turns. Error notes shown in the page are not part of it.
const history = [];
let current = null; // the generation in flight: { stop(), stopped }
let models = [];

// unauthorized explains a 401: the server wants a key, or another one.
function unauthorized(detail) {
  const have = el.apiKey.value.trim() !== '';
  return `401 Unauthorized: ${detail}. ` + (have
    ? 'The API key under Settings is not the one the server expects: correct it, then send again.'
    : 'The server needs an API key: enter it under Settings → API key, then send again.');
}

// ---- settings, kept in localStorage ----

const SETTINGS = 'spigot.settings';
const API_KEY = 'spigot.apiKey';
const persisted = ['system', 'temperature', 'topP', 'maxTokens', 'seed', 'transport'];

function storageGet(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}
function storageSet(key, value) {
  try {
    if (value === '') localStorage.removeItem(key); else localStorage.setItem(key, value);
  } catch { /* storage disabled: settings last for this page only */ }
}

function loadSettings() {
  let saved = {};
  try { saved = JSON.parse(storageGet(SETTINGS) || '{}') || {}; } catch { /* ignore a bad entry */ }
  for (const k of persisted) {
    if (typeof saved[k] === 'string') el[k].value = saved[k];
  }
  el.apiKey.value = storageGet(API_KEY) || '';
  return saved.model;
}

function saveSettings() {
  const s = { model: el.model.value };
  for (const k of persisted) s[k] = el[k].value;
  storageSet(SETTINGS, JSON.stringify(s));
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = el.apiKey.value.trim();
  if (key !== '') h.Authorization = 'Bearer ' + key;
  return h;
}

// ---- models ----

async function loadModels(preferred) {
  let res;
  try {
    res = await fetch('v1/models', { headers: headers() });
  } catch (e) {
    showNotice('Cannot reach the server: ' + e.message, 'error');
    return;
  }
  if (res.status === 401) {
    showNotice(unauthorized(await responseError(res)), 'error');
    return;
  }
  if (!res.ok) {
    showNotice('Listing models failed: ' + await responseError(res), 'error');
    return;
  }
  let body;
  try { body = await res.json(); } catch { body = {}; }
  models = Array.isArray(body.data) ? body.data.filter((m) => m && typeof m.id === 'string') : [];
  const current = el.model.value || preferred;
  el.model.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  if (models.some((m) => m.id === current)) el.model.value = current;
  el.model.disabled = models.length === 0;
  showModelNotice();
}

// A model whose description or owner says it has random weights gets a
// notice, so nobody mistakes its gibberish for a broken server.
function showModelNotice() {
  const m = models.find((m) => m.id === el.model.value);
  if (!m) {
    showNotice(models.length === 0 ? 'The server lists no models.' : '', 'error');
    return;
  }
  const about = [m.description, m.owned_by].filter((s) => typeof s === 'string').join(' ');
  if (/random|demo|synth/i.test(about)) {
    showNotice(typeof m.description === 'string' && m.description !== ''
      ? `${m.id}: ${m.description}`
      : `${m.id} is a demo model with random weights: its answers are random text.`, 'demo');
  } else {
    showNotice('', '');
  }
}

function showNotice(text, kind) {
  el.notice.textContent = text;
  el.notice.dataset.kind = kind;
  el.notice.hidden = text === '';
}

// ---- messages ----

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  const who = document.createElement('div');
  who.className = 'role';
  who.textContent = { user: 'You', assistant: 'Assistant', error: 'Error' }[role] || role;
  const content = document.createElement('div');
  content.className = 'content';
  const node = document.createTextNode(text);
  content.append(node);
  div.append(who, content);
  el.empty.hidden = true;
  el.messages.append(div);
  scrollToEnd(true);
  return { div, node };
}

function addMeta(div, text) {
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = text;
  div.append(meta);
}

function nearEnd() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
}

function scrollToEnd(force) {
  if (force || nearEnd()) el.messages.scrollTop = el.messages.scrollHeight;
}

// ---- stats ----

// Stats of one generation. Tokens are counted from content chunks while the
// answer streams (the server sends one chunk per token or a few), and taken
// from usage at the end. Speed is the decode rate: tokens after the first
// over the time since the first, as the first token's wait is the TTFT.
class Stats {
  constructor() {
    this.start = performance.now();
    this.first = 0;
    this.last = 0;
    this.chunks = 0;
    this.finish = '';
    this.usage = null;
    this.frame = 0;
  }

  token() {
    const now = performance.now();
    if (this.chunks === 0) this.first = now;
    this.last = now;
    this.chunks++;
    // Repaint the numbers at most once per frame.
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.show(false); });
  }

  count() {
    const n = this.usage && Number.isFinite(this.usage.completion_tokens) ? this.usage.completion_tokens : 0;
    return Math.max(n, this.chunks);
  }

  rate(final) {
    const n = final ? this.count() : this.chunks;
    const end = final ? this.last : performance.now();
    const secs = (end - this.first) / 1000;
    return n >= 2 && secs > 0 ? (n - 1) / secs : NaN;
  }

  show(final) {
    const tps = this.rate(final);
    el.tps.textContent = Number.isFinite(tps) ? tps.toFixed(1) + ' tok/s' : '–';
    el.ttft.textContent = this.chunks > 0 ? Math.round(this.first - this.start) + ' ms' : '–';
    let tokens = String(this.count());
    if (final && this.usage && Number.isFinite(this.usage.prompt_tokens)) {
      tokens += ` (+${this.usage.prompt_tokens} prompt)`;
    }
    el.tokens.textContent = tokens;
    el.finish.textContent = this.finish || '–';
  }

  summary() {
    const parts = [this.count() + ' tokens'];
    const tps = this.rate(true);
    if (Number.isFinite(tps)) parts.push(tps.toFixed(1) + ' tok/s');
    if (this.chunks > 0) parts.push('first token ' + Math.round(this.first - this.start) + ' ms');
    if (this.finish) parts.push(this.finish);
    return parts.join(' · ');
  }
}

function clearStats() {
  for (const e of [el.tps, el.ttft, el.tokens, el.finish]) e.textContent = '–';
}

// ---- generation ----

function setGenerating(on) {
  document.body.dataset.state = on ? 'generating' : 'idle';
  el.send.disabled = on;
  el.stop.disabled = !on;
  el.clear.disabled = on;
}

function setStatus(text, kind) {
  el.status.textContent = text;
  el.status.dataset.kind = kind;
}

function number(input, parse) {
  const s = input.value.trim();
  if (s === '') return undefined;
  const v = parse(s);
  return Number.isFinite(v) ? v : undefined;
}

function buildRequest() {
  const messages = [];
  const system = el.system.value.trim();
  if (system !== '') messages.push({ role: 'system', content: system });
  messages.push(...history);
  const req = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (el.model.value) req.model = el.model.value;
  const opts = {
    temperature: number(el.temperature, parseFloat),
    top_p: number(el.topP, parseFloat),
    max_tokens: number(el.maxTokens, (s) => parseInt(s, 10)),
    seed: number(el.seed, (s) => parseInt(s, 10)), // empty: the server picks one
  };
  for (const [k, v] of Object.entries(opts)) if (v !== undefined) req[k] = v;
  return req;
}

class StreamError extends Error {}

// How many times a generation whose connection drops is resumed before
// the page gives up.
const RESUMES = 5;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function send() {
  if (current) return;
  const text = el.prompt.value;
  if (text.trim() === '') return;
  el.prompt.value = '';
  autosize();
  const user = addMessage('user', text);
  history.push({ role: 'user', content: text });

  const answer = addMessage('assistant', '');
  answer.div.classList.add('pending');
  const turn = { role: 'assistant', content: '' };
  const stats = new Stats();
  clearStats();
  const gen = { stopped: false, stop() { this.stopped = true; } };
  current = gen;
  setGenerating(true);
  setStatus('Generating…', 'busy');

  // What either transport hands over as the answer streams.
  const sink = {
    text(piece) {
      if (piece === '' || gen.stopped) return;
      const pinned = nearEnd();
      answer.node.appendData(piece);
      turn.content += piece;
      stats.token();
      if (pinned) scrollToEnd(true);
    },
    finish(reason) { if (reason) stats.finish = reason; },
    usage(u) { if (u) stats.usage = u; },
  };

  let outcome = 'done';
  let problem = '';
  try {
    if (el.transport.value === 'ws') await generateWS(buildRequest(), sink, gen);
    else await generateSSE(buildRequest(), sink, gen);
    if (gen.stopped) throw new StreamError('stopped');
  } catch (e) {
    if (gen.stopped) {
      outcome = 'stopped';
      stats.finish = stats.finish || 'stopped';
    } else {
      outcome = 'error';
      problem = e instanceof StreamError ? e.message : 'Request failed: ' + (e && e.message || e);
    }
  } finally {
    current = null;
  }

  if (stats.frame) cancelAnimationFrame(stats.frame);
  answer.div.classList.remove('pending');
  if (turn.content !== '' || outcome === 'done') {
    history.push(turn);
    answer.div.dataset.finish = stats.finish || outcome;
    addMeta(answer.div, stats.summary());
  } else {
    // Stopped or failed before any text: take the turn back so that
    // sending again does not repeat it, and give the text back to the
    // input box.
    answer.div.remove();
    history.pop();
    user.div.remove();
    if (el.prompt.value === '') {
      el.prompt.value = text;
      autosize();
    }
  }
  if (outcome === 'error') addMessage('error', problem);
  if (!el.messages.querySelector('.msg')) el.empty.hidden = false;
  stats.show(true);
  setGenerating(false);
  setStatus({ done: 'Done', stopped: 'Stopped', error: 'Error' }[outcome], outcome);
  el.prompt.focus();
}

// ---- server-sent events ----

// cancelStream asks the server to stop a stream's generation: closing the
// connection alone would leave it running, to be resumed.
function cancelStream(id) {
  fetch(`v1/streams/${encodeURIComponent(id)}/cancel`, { method: 'POST', headers: headers() })
    .catch(() => { /* the server cancels it after its resume window anyway */ });
}

// generateSSE streams a chat request as server-sent events. Each event's
// id is "STREAM:SEQ": when the connection drops before [DONE], the stream
// is resumed from the last id with GET v1/streams/STREAM.
async function generateSSE(req, sink, gen) {
  const controller = new AbortController();
  let streamId = '';
  let lastId = '';
  gen.stop = () => {
    gen.stopped = true;
    if (streamId !== '') cancelStream(streamId);
    controller.abort();
  };
  let res = await fetch('v1/chat/completions', {
    method: 'POST', headers: headers(), body: JSON.stringify(req), signal: controller.signal,
  });
  for (let resumes = 0; ; resumes++) {
    if (res.status === 204) return; // resumed after the end: nothing more
    if (!res.ok) {
      const detail = await responseError(res);
      throw new StreamError(res.status === 401 ? unauthorized(detail) : `${res.status} ${res.statusText}: ${detail}`);
    }
    if (!res.body) throw new StreamError('the response has no body');
    let sawDone = false;
    let lost = null;
    try {
      await readEvents(res.body, (ev) => {
        const colon = ev.id.lastIndexOf(':');
        if (colon > 0) {
          streamId = ev.id.slice(0, colon);
          lastId = ev.id;
        }
        const r = interpret(ev.data);
        if (r.done) {
          sawDone = true;
          return true;
        }
        if (r.error !== undefined) throw new StreamError(r.error);
        if (r.invalid !== undefined) {
          console.warn('spigot: ignoring an event that is not JSON:', r.invalid);
          return false;
        }
        const c = r.chunk;
        if (c.usage) sink.usage(c.usage);
        const choice = Array.isArray(c.choices) ? c.choices[0] : undefined;
        if (choice) {
          sink.text(choice.delta && typeof choice.delta.content === 'string' ? choice.delta.content : '');
          sink.finish(choice.finish_reason);
        }
        return false;
      });
    } catch (e) {
      if (e instanceof StreamError || gen.stopped) throw e;
      lost = e; // the connection failed mid-stream
    }
    if (sawDone || gen.stopped) return;
    // The connection ended before [DONE]: resume where it stopped.
    if (streamId === '' || resumes >= RESUMES) {
      throw new StreamError('the connection closed before the answer finished' + (lost ? ` (${lost.message})` : ''));
    }
    setStatus('Reconnecting…', 'busy');
    await sleep(200 * resumes);
    res = await fetch(`v1/streams/${encodeURIComponent(streamId)}`, {
      headers: { ...headers(), 'Last-Event-ID': lastId }, signal: controller.signal,
    });
    setStatus('Generating…', 'busy');
  }
}

// readEvents reads an event stream to its end, handing each event to
// onEvent, which returns true when no more events are wanted ([DONE]).
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  let stop = false;
  const parser = new SSEParser((ev) => {
    if (!stop) stop = onEvent(ev);
  });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
      if (stop) return;
    }
    parser.push(decoder.decode());
    parser.end();
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---- WebSocket ----

// Socket is the page's one WebSocket to v1/ws, opened when first needed
// and again after it closes. Generations on it are told apart by ids; each
// registers what to do with its messages, and what to do if the socket
// closes before its end.
class Socket {
  constructor() {
    this.ws = null;
    this.opening = null;
    this.gens = new Map(); // id → { message(m), lost() }
    this.next = 0;
  }

  url() {
    const u = new URL('v1/ws', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }

  // open resolves with an open WebSocket.
  open() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    if (this.opening) return this.opening;
    // A browser cannot send an Authorization header on a WebSocket: the
    // key goes as a subprotocol, which the server never echoes.
    const protocols = ['spigot.v1'];
    const key = el.apiKey.value.trim();
    if (key !== '') protocols.push('spigot-key.' + key);
    this.opening = new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url(), protocols);
      } catch (e) {
        this.opening = null;
        reject(new StreamError(`cannot open a WebSocket with this API key (${e.message}); use SSE`));
        return;
      }
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.opening = null;
        resolve(ws);
      };
      ws.onmessage = (e) => {
        let m;
        try { m = JSON.parse(e.data); } catch { return; }
        const g = m && this.gens.get(m.id);
        if (g) g.message(m);
        else if (m && m.type === 'error') console.warn('spigot: WebSocket error:', m.error);
      };
      ws.onclose = () => {
        if (!opened) {
          this.opening = null;
          reject(new StreamError('the WebSocket connection failed' +
            (key === '' ? ' (does the server need an API key? Enter it under Settings)' : ' (is the API key under Settings right?)')));
          return;
        }
        if (this.ws === ws) this.ws = null;
        const lost = [...this.gens.values()];
        this.gens.clear();
        for (const g of lost) g.lost();
      };
    });
    return this.opening;
  }

  // start sends msg (with a fresh id) and routes the replies to handler.
  async start(msg, handler) {
    const ws = await this.open();
    const id = 'g' + (++this.next);
    this.gens.set(id, handler);
    ws.send(JSON.stringify({ ...msg, id }));
    return id;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  forget(id) { this.gens.delete(id); }

  // reset closes the socket (the API key changed).
  reset() {
    if (this.ws) this.ws.close(1000, 'settings changed');
    this.ws = null;
  }
}

const socket = new Socket();

// generateWS streams a chat request over the page's WebSocket. If the
// socket drops before the end, the stream is resumed on a new one after
// the last seq received. Stop sends cancel: the server stops at once.
function generateWS(req, sink, gen) {
  return new Promise((resolve, reject) => {
    let id = '';
    let stream = '';
    let seq = 0;
    let resumes = 0;
    let over = false;
    const end = (err) => {
      if (over) return;
      over = true;
      socket.forget(id);
      if (err) reject(err); else resolve();
    };
    const handler = {
      message(m) {
        if (over) return;
        switch (m.type) {
          case 'start':
            stream = m.stream;
            setStatus('Generating…', 'busy');
            break;
          case 'delta':
            seq = m.seq;
            if (m.index === 0) sink.text(typeof m.text === 'string' ? m.text : '');
            break;
          case 'done':
            sink.finish(m.finish_reason);
            sink.usage(m.usage);
            end();
            break;
          case 'error': {
            const detail = errorMessage(m.error);
            end(new StreamError(m.status === 401 ? unauthorized(detail) : `${m.status || 'error'}: ${detail}`));
            break;
          }
        }
      },
      async lost() {
        if (over) return;
        if (stream === '' || resumes >= RESUMES) {
          end(new StreamError('the WebSocket closed before the answer finished'));
          return;
        }
        resumes++;
        setStatus('Reconnecting…', 'busy');
        await sleep(200 * resumes);
        try {
          id = await socket.start({ type: 'resume', stream, after: seq }, handler);
        } catch (e) {
          end(e);
        }
      },
    };
    gen.stop = () => {
      gen.stopped = true;
      if (id !== '') socket.send({ type: 'cancel', id });
      end();
    };
    socket.start({ type: 'chat', request: req }, handler).then((got) => {
      id = got;
      if (gen.stopped) socket.send({ type: 'cancel', id });
    }, (e) => end(e));
  });
}

// responseError reads the message of a failed response: the OpenAI error
// object if the body is one, else the body's text.
async function responseError(res) {
  let text = '';
  try { text = await res.text(); } catch { /* nothing to read */ }
  try {
    const obj = JSON.parse(text);
    if (obj && obj.error !== undefined) return errorMessage(obj.error);
  } catch { /* not JSON */ }
  return text.trim() || res.statusText || 'no details';
}

function stop() {
  if (current) current.stop();
}

function clearChat() {
  if (current) return;
  history.length = 0;
  for (const m of el.messages.querySelectorAll('.msg')) m.remove();
  el.empty.hidden = false;
  clearStats();
  setStatus('Ready', 'idle');
  el.prompt.focus();
}

function autosize() {
  const p = el.prompt;
  p.style.height = 'auto';
  p.style.height = Math.min(p.scrollHeight + 2, 240) + 'px';
}

// ---- wiring ----

el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
el.prompt.addEventListener('keydown', (e) => {
  // Enter sends; Shift+Enter is a new line; Enter that ends an IME
  // composition is left to the IME.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    send();
  }
});
el.prompt.addEventListener('input', autosize);
$('settings-form').addEventListener('submit', (e) => e.preventDefault());
el.stop.addEventListener('click', stop);
el.clear.addEventListener('click', clearChat);
el.model.addEventListener('change', () => {
  saveSettings();
  showModelNotice();
});
for (const k of persisted) el[k].addEventListener('input', saveSettings);
el.apiKey.addEventListener('change', () => {
  storageSet(API_KEY, el.apiKey.value.trim());
  socket.reset();
  loadModels();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && current) stop();
});

// On a narrow screen the settings sit above the chat: start them folded.
const narrow = matchMedia('(max-width: 760px)');
if (narrow.matches) el.settings.open = false;
narrow.addEventListener('change', () => { el.settings.open = !narrow.matches; });
const preferred = loadSettings();
setGenerating(false);
setStatus('Ready', 'idle');
loadModels(preferred);
el.prompt.focus();
