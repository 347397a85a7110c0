// Package gateway is `spigot gateway`: an OpenAI-compatible front that
// routes requests to several upstream servers (Spigot replicas, vLLM or
// any OpenAI-compatible server, Hugging Face TGI, Ollama), checks their
// health, and fails over, mid-stream included, without the client seeing
// a seam.
//
// Routes: POST /v1/completions and /v1/chat/completions (streamed with SSE
// or not), GET /v1/streams/{id} and POST /v1/streams/{id}/cancel
// (resuming and canceling streams), GET /v1/ws (WebSocket), GET /v1/models
// (the union of the upstreams' configured models), /health (200 while the
// process serves), /ready (200 while an upstream is healthy and the
// gateway is not draining), /metrics (Prometheus; see metrics.go for the
// spigot_gateway_* series), and POST /tokenize and /detokenize, passed to
// a spigot or openai upstream serving the model. [Gateway.GRPCServer]
// serves spigot.v1.Generation (`spigot gateway --grpc-addr`). Every
// client-facing transport is spigot serve's, with the same messages.
//
// # Wire formats
//
// A request goes to spigot and openai upstreams as the client sent it
// (streams to spigot upstreams with "return_token_ids": true added, for
// failover, and stream_options.cancel_on_disconnect, so that the gateway
// ending a request stops its generation at once), and their events come
// back as they were sent (less the token-id fields the client did not ask
// for), each written to the client as soon as it is read, with an id
// (below); the events read together are flushed together (no
// re-encoding, no buffering beyond the event being read). TGI and Ollama upstreams get the request in their
// own API (completions: TGI's /generate_stream, Ollama's /api/generate
// with raw; chat: Ollama's /api/chat, and TGI's OpenAI-compatible
// /v1/chat/completions as is, since TGI's native API has no chat), and
// their answers are translated into OpenAI chunks.
//
// # Routing
//
// A request may go to the healthy upstreams that list its model (any
// upstream when it names none; a 404 when none lists it). When none of
// them is healthy, the unhealthy ones are tried anyway rather than
// refusing outright. Among the candidates:
//
//   - Load is the requests the gateway has in flight on an upstream or,
//     when larger, the requests a spigot upstream last reported queued and
//     running (spigot_engine_queued_requests +
//     spigot_engine_running_sequences on its /metrics, scraped with each
//     health check: it counts other gateway replicas' requests too, but is
//     up to an interval old), divided by the upstream's weight.
//   - Prefix affinity: the first routing.prefix_bytes bytes of the prompt
//     (of the messages' JSON, for chat) are hashed, and weighted rendezvous
//     hashing over the candidates' names picks the prefix's upstream, so
//     that requests sharing a long prefix meet the same prefix cache. The
//     hash is fixed, so every gateway replica agrees, and an upstream
//     leaving moves only its own prefixes.
//   - The prefix's upstream is kept unless its load exceeds
//     routing.affinity_factor × (the least load + 1); then the least loaded
//     upstream is taken (ties: the better rendezvous score). With the
//     default factor 2, an idle pool keeps affinity until the prefix's
//     upstream has 3 more requests than the least loaded.
//
// spigot_gateway_affinity_total{result} counts hit (the prefix's upstream
// was kept) and miss (load moved the request).
//
// # Health
//
// Every health.interval the gateway GETs /ready from spigot upstreams
// (503 while loading and while draining: a replica shutting down gets no
// new requests), /health from openai and tgi ones and /api/version from
// Ollama; an upstream whose check fails is out of rotation until one
// passes. Passively, a request that fails on an upstream (connection
// error, 5xx, a stream cut short, an error event of type server_error)
// takes it out for health.cooldown. A 429 is retried elsewhere without
// ejecting. A request that fails on a kept-alive connection before any
// response (the upstream closed the connection as the request went out:
// llama-server, uvicorn and Node close connections idle for 5 s) is sent
// again to the same upstream (twice at most) before it counts as failed.
//
// # Discovery
//
// An upstream entry with "discovery: dns" stands for every address its
// URL's host resolves to, such as a Kubernetes headless Service's name
// (one address per ready pod): prefix affinity and load need each replica
// as an upstream of its own, which a ClusterIP Service's one address
// hides. Each address becomes an upstream named NAME/ADDRESS (pool/10.1.2.3)
// with the entry's kind, models, key and weight, and the URL with the
// address for the host (http only: TLS would check the certificate
// against the address). The name is resolved at start and every
// resolve_interval (default 5s):
//
//   - a new address joins after its first passing active check (until
//     then it is not even a fallback);
//   - an address gone from the answer drains: it gets no new requests,
//     those in flight finish, and once the last has ended it is dropped
//     with its series; if it comes back first, it is taken back after a
//     passing check;
//   - a failed lookup keeps the upstreams found before, except "no such
//     host" (a headless Service with no ready pod), which means none.
//
// Rendezvous hashing over the NAME/ADDRESS names keeps a pod's prefixes
// while it lives, and one pod leaving moves only its own.
//
// # Client keys
//
// With auth.keys configured, every route but /health and /ready needs
// "Authorization: Bearer KEY" with a listed key; the file holds only each
// key's SHA-256. Clients' keys are never sent upstream. Without keys the
// gateway is open, and a client's Authorization header goes to upstreams
// that have no api_key of their own.
//
// Each key may have two rate limits, token buckets checked when a
// generation request arrives: burst requests refilled at
// requests_per_minute, and token_burst tokens (default a minute's worth)
// refilled at tokens_per_minute. A request is admitted while its key has a
// request and the token bucket is above zero; otherwise it gets a 429 with
// Retry-After (when the bucket will allow one). Tokens are charged as the
// request goes, so a long stream may take the bucket below zero and the
// next requests wait for it to refill:
//
//   - the prompt at admission, estimated as a quarter of the request
//     body's bytes (at least 1);
//   - one completion token per chunk with text, as it is relayed (one per
//     token on Spigot and vLLM);
//   - when a usage report comes (always in a whole response; in a stream
//     with stream_options.include_usage), the charge becomes its prompt
//     and completion tokens; a whole response without usage is charged a
//     quarter of its bytes.
//
// What was charged stays charged when the client goes away or the stream
// fails: aborted streams pay for what they got. Every keyed response (429s
// and streams included) carries OpenAI's headers for the limits the key
// has, as of admission: x-ratelimit-limit-requests (per minute),
// x-ratelimit-remaining-requests, x-ratelimit-reset-requests (until the
// bucket is full, as "1.5s"), and the -tokens variants.
//
// # Priority and fair sharing
//
// A key's priority is set as the "priority" field of its requests to
// spigot upstreams (replacing the client's; lower starts first in the
// engine's queue); other kinds get the body as sent. A key's
// max_concurrent caps its generation requests in flight; limits.max_in_flight
// caps the gateway's. Requests over either wait (their body read, so a
// client that goes away leaves the queue) and are admitted by stride
// scheduling: among keys with a request waiting and room under their cap,
// the one with the least pass goes next and its pass grows by 1/share, a
// key that was idle starting at the current pass. So while keys wait, each
// is admitted in proportion to its share, however many requests it queued:
// a key with 50 waiting and one with 5 alternate (TestFairSharing), and
// within a key requests go in order. Keyless requests (an open gateway)
// share one class. spigot_gateway_admission_wait_seconds is the wait.
//
// # CORS and TLS
//
// With cors.allowed_origins ("*": any), a request whose Origin is listed
// gets Access-Control-Allow-Origin (the origin), Vary: Origin and
// Access-Control-Expose-Headers (the rate-limit headers, Retry-After,
// X-Spigot-Upstream), streams included; its preflight (OPTIONS with
// Access-Control-Request-Method, no key needed) is answered 204 with
// the methods (GET, POST), cors.allowed_headers (default Authorization,
// Content-Type) and Access-Control-Max-Age (cors.max_age, default 10m).
// Other origins get no CORS headers, so browsers keep the answers from
// their pages. `spigot gateway --tls-cert FILE --tls-key FILE` serves
// HTTPS. Request bodies over [openai.MaxBodyBytes] get 413.
//
// # Resumable streams
//
// Every generation runs as a session: its relay goes on in a goroutine of
// its own and appends the client-facing events (OpenAI chunks, an error
// event, [DONE]) to a log, whether or not a client is reading; the
// transports read the log from any position. SSE events carry "id:
// STREAM:SEQ" (STREAM is gs- and random hex, the response's
// X-Spigot-Stream header); a client that lost its connection gets the
// events after the last one it received, then the live rest, with
//
//   - GET /v1/streams/{id} with Last-Event-ID (what a browser's
//     EventSource sends when it reconnects) or ?after=SEQ, or
//   - the same POST again with Last-Event-ID,
//
// or over a WebSocket ({"type":"resume","stream":ID,"after":SEQ}) or gRPC
// (Resume, or a Channel resume), whatever transport started it. A stream
// whose client goes away keeps running for streams.resume_window
// (default 60s) and is then canceled upstream; a finished stream's events
// are kept as long, within streams.max_memory (default 64MiB; the oldest
// finished streams are forgotten first). stream_options.cancel_on_disconnect (gRPC: resumable
// false, the default) cancels at once instead, and POST
// /v1/streams/{id}/cancel cancels explicitly (the reader gets an error
// event with code "canceled", then [DONE]). A stream is resumed only with
// the client key that started it (another key is told it does not
// exist); a resume takes the stream over from a connection still
// delivering it. Usage is charged to the key as the relay gets it,
// whether anyone reads.
//
// The state is one gateway instance's memory: the default, a single
// instance, needs nothing else. With several instances behind a load
// balancer (no session affinity needed), set streams.advertise on each
// to the URL the others reach it at (on Kubernetes the pod IP) and the
// same streams.secret. A stream id then names the instance that owns it,
// base64url-encoded, with an HMAC-SHA256 of the id under the secret (so
// no client can send an instance to an address of its choosing): an
// instance asked to resume or cancel another's stream forwards the
// request to the owner (GET /v1/streams/{id} with the client's key and
// Last-Event-ID) and relays the answer; a WebSocket or gRPC resume
// mirrors the owner's SSE stream and reads it as a local one, and its
// cancel goes to the owner. If the owner is gone, so is the stream (502
// stream_owner_unreachable): the stream's state is where its relay runs,
// as an upstream's KV cache is where its generation runs. docs/scale-out.md
// weighs this against a shared store.
//
// # Failover
//
// A request is tried on at most routing.max_attempts upstreams, never the
// same one twice. Before anything was sent to the client, a failure is
// simply retried on the next upstream the policy picks. Once a stream has
// begun, a cut (the connection ends without data: [DONE], a server_error
// event arrives, or the upstream sends nothing for routing.stall_timeout)
// is continued on another upstream:
//
//   - from token ids, when every token sent came from spigot upstreams
//     (asked for "return_token_ids": true; the ids are cut out of the
//     events unless the client asked for them itself) and the next
//     upstream is a spigot one: a completions request (on
//     /v1/completions, chat included) whose prompt is the first chunk's
//     prompt_token_ids followed by the token_ids sent so far, with
//     max_tokens the limit less exactly those ids (no limit: the
//     context's, as for the chat); a chat request's sampling settings,
//     stop strings and stream options carry over, and the continuation's
//     completion chunks are re-encoded as chat chunks (text as
//     delta.content). Chat with logprobs is continued from text (below),
//     as completions logprobs are another shape.
//   - otherwise from text: for completions the prompt becomes the prompt
//     plus the text sent so far, and max_tokens (16 if absent, as
//     OpenAI's default) is reduced by the tokens sent, counted as the
//     chunks that carried text (Spigot and vLLM send one chunk per token,
//     so the count is exact for them except for tokens that decode to no
//     text); for chat the messages get a final assistant message holding
//     the text sent so far, with vLLM's "continue_final_message": true and
//     "add_generation_prompt": false, so that the template leaves the
//     assistant turn open and generation continues it (Ollama continues a
//     final assistant message by itself); max_tokens or
//     max_completion_tokens is reduced likewise.
//
// When the limit is already reached, the gateway ends the stream itself
// with finish_reason "length".
//
// The continuation's chunks are rewritten to the stream's first id,
// created and model; its chat role chunk is dropped; its usage chunk (with
// stream_options.include_usage) counts the tokens sent before the cut as
// completion tokens and not as prompt tokens. So the client sees one
// stream: nothing lost or repeated, one finish_reason and one [DONE].
//
// With greedy decoding on spigot upstreams serving the same model, a
// stream continued from token ids ends exactly as an undisturbed run
// would: the model is given the very tokens it had (TestFailoverMidStream
// checks 32 streams of 32, completions and chats, and TestProcessesFailover
// real processes killed). A continuation from text is the greedy
// continuation of the prompt plus the text so far, which equals an
// undisturbed run only when that text tokenizes back to the tokens that
// were generated: a model may generate a split its tokenizer would not
// make, or byte pieces (the test model often does). Spigot's chat
// endpoint does not honour continue_final_message, so a chat continued
// from text on Spigot renders the text so far as a finished assistant
// turn and opens a new one; continuation from ids avoids that.
//
// Streams with several choices (n > 1, several prompts), token-id prompts,
// or echo are retried only before their first byte; a cut after it ends
// them with an error event and [DONE].
package gateway
