// Server-Sent Events parsing for the chat page, kept apart from the UI so a
// test can import it and feed it hostile input.

// SSEParser turns text, pushed in pieces as the network delivers it, into
// events, following the event-stream rules of the HTML standard: lines end
// in LF, CRLF or CR (a CRLF may be split between two pieces); "data:" lines
// of one event are joined with "\n"; a blank line ends an event; lines that
// start with ":" are comments (keepalives); one space after the colon is
// dropped. onEvent receives {type, data, id} for each complete event.
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';      // text after the last line end
    this.skipLF = false; // the last piece ended in CR: a leading LF belongs to it
    this.reset();
  }

  reset() {
    this.data = [];
    this.type = '';
    this.id = '';
  }

  // push adds the next piece of decoded text.
  push(text) {
    if (text === '') return;
    if (this.skipLF) {
      this.skipLF = false;
      if (text[0] === '\n') text = text.slice(1);
    }
    let buf = this.buf + text;
    let start = 0;
    // Search only the new text for line ends: this.buf holds none.
    let i = this.buf.length;
    for (;;) {
      const lf = buf.indexOf('\n', i);
      const cr = buf.indexOf('\r', i);
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (end < 0) break;
      this.line(buf.slice(start, end));
      start = end + 1;
      if (buf[end] === '\r') {
        if (start === buf.length) this.skipLF = true;
        else if (buf[start] === '\n') start++;
      }
      i = start;
    }
    this.buf = buf.slice(start);
  }

  // end finishes the stream. An event whose blank line never came is still
  // delivered: servers that close right after the last "data:" line are
  // common, and dropping their final event would lose the end of an answer.
  end() {
    if (this.buf !== '') {
      this.line(this.buf);
      this.buf = '';
    }
    this.dispatch();
  }

  line(s) {
    if (s === '') {
      this.dispatch();
      return;
    }
    if (s[0] === ':') return;
    const colon = s.indexOf(':');
    const field = colon < 0 ? s : s.slice(0, colon);
    let value = colon < 0 ? '' : s.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    switch (field) {
      case 'data': this.data.push(value); break;
      case 'event': this.type = value; break;
      case 'id': if (!value.includes('\0')) this.id = value; break;
      // "retry" and unknown fields are ignored, as the standard says.
    }
  }

  dispatch() {
    if (this.data.length === 0) {
      this.type = '';
      return;
    }
    const ev = { type: this.type || 'message', data: this.data.join('\n'), id: this.id };
    this.data = [];
    this.type = '';
    this.onEvent(ev);
  }
}

// interpret reads the data of one OpenAI streaming event. It returns
// {done: true} for "[DONE]", {error: message} for an error event (the
// OpenAI {"error": {"message": ...}} shape, or a bare string), {chunk: obj}
// for a completion chunk, or {invalid: data} for anything that is not JSON.
export function interpret(data) {
  const s = data.trim();
  if (s === '[DONE]') return { done: true };
  let obj;
  try {
    obj = JSON.parse(s);
  } catch {
    return { invalid: data };
  }
  if (obj === null || typeof obj !== 'object') return { invalid: data };
  if (obj.error !== undefined && obj.error !== null) return { error: errorMessage(obj.error) };
  return { chunk: obj };
}

// errorMessage turns the "error" member of an API response into a line of
// text.
export function errorMessage(err) {
  if (typeof err === 'string') return err;
  if (err && typeof err.message === 'string' && err.message !== '') return err.message;
  return JSON.stringify(err);
}
