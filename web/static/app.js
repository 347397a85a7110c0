// The chat page: sends the conversation to POST v1/chat/completions with
// stream: true, and renders the answer as its pieces arrive. Model output is
// only ever put in the page as text (Text nodes, textContent), never as HTML.

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
  tps: $('tps'),
  ttft: $('ttft'),
  tokens: $('tokens'),
  finish: $('finish'),
};

// The conversation as the API sees it: {role, content} of user and
// assistant turns. Error notes shown in the page are not part of it.
const history = [];
let controller = null; // AbortController of the request in flight
let streamId = '';     // the server's id of the stream in flight, from its events' ids
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
const persisted = ['system', 'temperature', 'topP', 'maxTokens', 'seed'];

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

async function send() {
  if (controller) return;
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
  controller = new AbortController();
  const signal = controller.signal;
  setGenerating(true);
  setStatus('Generating…', 'busy');

  let outcome = 'done';
  let problem = '';
  try {
    const res = await fetch('v1/chat/completions', {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify(buildRequest()),
      signal,
    });
    if (!res.ok) {
      const detail = await responseError(res);
      throw new StreamError(res.status === 401 ? unauthorized(detail) : `${res.status} ${res.statusText}: ${detail}`);
    }
    if (!res.body) throw new StreamError('the response has no body');
    let sawDone = false;
    await readEvents(res.body, (ev) => {
      // Event ids are "STREAM:SEQ": the stream's id lets Stop cancel it
      // on the server (a disconnect alone leaves it to be resumed).
      const colon = ev.id.lastIndexOf(':');
      if (colon > 0) streamId = ev.id.slice(0, colon);
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
      if (c.usage) stats.usage = c.usage;
      const choice = Array.isArray(c.choices) ? c.choices[0] : undefined;
      if (choice) {
        const piece = choice.delta && typeof choice.delta.content === 'string' ? choice.delta.content : '';
        if (piece !== '') {
          const pinned = nearEnd();
          answer.node.appendData(piece);
          turn.content += piece;
          stats.token();
          if (pinned) scrollToEnd(true);
        }
        if (choice.finish_reason) stats.finish = choice.finish_reason;
      }
      return false;
    });
    if (!sawDone && !stats.finish && !signal.aborted) {
      throw new StreamError('the connection closed before the answer finished');
    }
  } catch (e) {
    if (signal.aborted) {
      outcome = 'stopped';
      stats.finish = stats.finish || 'stopped';
    } else {
      outcome = 'error';
      problem = e instanceof StreamError ? e.message : 'Request failed: ' + (e && e.message || e);
    }
  } finally {
    controller = null;
    streamId = '';
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
  if (!controller) return;
  if (streamId !== '') {
    fetch(`v1/streams/${encodeURIComponent(streamId)}/cancel`, { method: 'POST', headers: headers() })
      .catch(() => { /* the stream ends with the server's window anyway */ });
  }
  controller.abort();
}

function clearChat() {
  if (controller) return;
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
  loadModels();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && controller) stop();
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
