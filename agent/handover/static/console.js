// wacall agent console: plain JS, no build step. Talks to the JSON + SSE API next to this page and, while
// on a call, sends the agent's microphone to wacall over WebRTC (wacall answers; no STUN, no media server).
// window.wacallConsole exposes what the page knows, for the browser test and for debugging in devtools.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = (window.wacallConsole = {
    csrf: null,
    agent: null,
    state: null,
    media: "idle", // RTCPeerConnection state while on a call
    live: [], // live transcript lines of the current call
    callerPeak: 0, // loudest caller audio heard in the page (RMS, 0..1) since the last reset
    notices: [],
  });
  let source = null;
  let pc = null;
  let mic = null;
  let meters = null; // { context, timers } while on a call
  let selected = null; // call id shown in the details panel
  let stateAt = 0; // when the last state arrived (for local countdowns)
  let busy = false; // an accept is in flight

  // --- server ------------------------------------------------------------------------------------------
  async function api(path, body) {
    const options = { credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRF-Token"] = ui.csrf || "";
      options.body = JSON.stringify(body);
    }
    const response = await fetch("api/" + path, options);
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      /* an empty or non-JSON body: the status says enough */
    }
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function notice(text, kind = "info") {
    ui.notices.push({ text, kind });
    const el = $("notice");
    el.textContent = text;
    el.className = kind;
    el.hidden = !text;
  }

  async function boot() {
    try {
      const session = await api("session");
      if (session.signed_in) signedIn(session);
      else showSignIn();
    } catch (error) {
      notice("Cannot reach wacall: " + error.message, "error");
      setTimeout(boot, 3000);
    }
  }

  function showSignIn() {
    closeStream();
    endMedia();
    ui.csrf = null;
    ui.agent = null;
    ui.state = null;
    $("signin").hidden = false;
    $("desk").hidden = true;
    $("me").hidden = true;
    document.title = "wacall · agent console";
    $("agent-id").focus();
  }

  function signedIn(session) {
    ui.csrf = session.csrf;
    ui.agent = session.agent;
    $("signin").hidden = true;
    $("desk").hidden = false;
    $("me").hidden = false;
    $("me-name").textContent = session.agent.name;
    openStream();
  }

  function openStream() {
    closeStream();
    source = new EventSource("api/events");
    const on = (type, handler) => source.addEventListener(type, (e) => handler(JSON.parse(e.data)));
    on("state", (m) => render(m.state));
    on("offer", () => flashTitle());
    on("offer_withdrawn", (m) => {
      if (m.reason === "timeout") notice("You missed a call, so you are now away.", "warn");
      else if (m.reason === "caller_hung_up") notice("The caller hung up before you answered.", "warn");
    });
    on("connected", () => notice("", "info"));
    on("transcript", (m) => {
      if (ui.state && ui.state.call && ui.state.call.call_id === m.call_id) {
        ui.live.push({ who: m.who, text: m.text });
        renderLive();
      }
    });
    on("call_ended", (m) => {
      endMedia();
      const why = {
        caller_hung_up: "The caller hung up.",
        agent_hung_up: "Call ended.",
        returned_to_bot: "The call went back to the bot.",
        disconnected: "Your audio dropped; the caller went back to the queue.",
      };
      notice(why[m.reason] || "Call ended (" + m.reason + ").", m.reason === "disconnected" ? "error" : "info");
    });
    on("alert", (m) => notice(m.message, "error"));
    on("signed_out", (m) => {
      notice(m.reason, "warn");
      showSignIn();
    });
    on("closed", () => notice("wacall is restarting; reconnecting…", "warn"));
    source.onerror = () => {
      // EventSource retries by itself; a refused reconnect (signed out elsewhere, server restarted) closes it.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(boot, 1000);
      }
    };
  }

  function closeStream() {
    if (source) source.close();
    source = null;
  }

  // --- rendering ---------------------------------------------------------------------------------------
  function text(el, value) {
    el.textContent = value == null ? "" : String(value);
    return el;
  }

  function make(tag, className, value) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (value !== undefined) text(el, value);
    return el;
  }

  function summaryAfterReason(call) {
    // The offline summary opens with the reason, which the card already shows in bold.
    const summary = (call && call.summary) || "";
    const reason = ((call && call.reason) || "").trim();
    const lead = reason && summary.toLowerCase().startsWith(reason.toLowerCase().replace(/[.!?]*$/, ""));
    if (!lead) return summary;
    const rest = summary.indexOf(" ", reason.length - 1);
    return rest < 0 ? "" : summary.slice(rest + 1).trim();
  }

  function callerLabel(call) {
    if (!call) return "";
    const who = call.caller_name || "Unknown caller";
    return call.caller_number ? who + " · +" + call.caller_number : who;
  }

  function showOrigin(el, call) {
    // What the caller tapped or opened to call (a campaign's button or link), so the agent knows why they call.
    const payload = (call && call.payload) || "";
    el.hidden = !payload;
    const how = call && call.payload_source === "link" ? "a deep link" : "a call button";
    text(el, payload ? "Came from " + how + ": " + payload : "");
  }

  function seconds(s) {
    s = Math.max(0, Math.round(s || 0));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function render(state) {
    ui.state = state;
    stateAt = performance.now();
    const me = state.me;
    const status = $("me-status");
    text(status, me.status);
    status.className = "pill " + me.status;
    text($("toggle-status"), me.status === "away" ? "Go available" : "Go away");
    renderWaiting(state.waiting);
    renderTeam(state.agents);
    renderOffer(state.offer);
    renderCall(state.call);
    $("idle").hidden = Boolean(state.offer || state.call);
    text($("idle-title"), me.status === "away" ? "You are away" : "Waiting for a call");
    text(
      $("idle-text"),
      me.status === "away" ? "Go available to receive calls." : "Calls you can take will ring here.",
    );
  }

  function renderWaiting(waiting) {
    const names = Object.fromEntries((ui.state.agents || []).map((a) => [a.id, a.name]));
    const list = $("waiting-list");
    list.replaceChildren();
    text($("waiting-count"), waiting.length);
    $("waiting-empty").hidden = waiting.length > 0;
    if (!waiting.some((c) => c.call_id === selected)) selected = waiting.length ? waiting[0].call_id : null;
    for (const call of waiting) {
      const item = make("li", call.call_id === selected ? "selected" : "");
      item.dataset.callId = call.call_id;
      const head = make("div", "head");
      head.append(make("strong", "", callerLabel(call)), make("span", "wait", seconds(call.waited_s)));
      const ringing = call.offered_to ? ` · ringing ${names[call.offered_to] || call.offered_to}` : "";
      const meta = make("div", "meta", `#${call.position} in ${call.queue}${ringing}`);
      item.append(head, meta, make("div", "reason", call.reason || "No reason given"));
      item.addEventListener("click", () => {
        selected = call.call_id;
        renderWaiting(ui.state.waiting);
      });
      list.append(item);
    }
    renderDetails(waiting.find((c) => c.call_id === selected));
  }

  function renderDetails(call) {
    $("details").hidden = !call;
    if (!call) return;
    text($("details-title"), callerLabel(call));
    showOrigin($("details-origin"), call);
    text($("details-reason"), call.reason || "No reason given");
    text($("details-summary"), summaryAfterReason(call));
    renderSlots($("details-slots"), call.slots);
    renderTranscript($("details-transcript"), call.transcript);
  }

  function renderSlots(dl, slots) {
    dl.replaceChildren();
    for (const [name, value] of Object.entries(slots || {})) {
      if (value === null || value === "") continue;
      dl.append(make("dt", "", name.replace(/_/g, " ")), make("dd", "", value));
    }
  }

  const KEYS_PREFIX = "[keys] ";

  function renderTranscript(list, lines) {
    list.replaceChildren();
    for (const line of lines || []) {
      // Keypad entries come as caller lines "[keys] 1" ("[keys] ••••" for a PIN): shown as keys, not words.
      const keys = typeof line.text === "string" && line.text.startsWith(KEYS_PREFIX);
      const item = make("li", keys ? line.who + " keys" : line.who);
      const said = keys ? "⌨ " + line.text.slice(KEYS_PREFIX.length) : line.text;
      item.append(make("span", "who", line.who), make("span", "said", said));
      if (keys) item.title = "pressed on the keypad";
      list.append(item);
    }
    list.scrollTop = list.scrollHeight;
  }

  function renderTeam(agents) {
    const list = $("agents");
    list.replaceChildren();
    for (const agent of agents) {
      const item = make("li", agent.status);
      item.append(make("span", "name", agent.name), make("span", "pill " + agent.status, agent.status));
      list.append(item);
    }
  }

  function renderOffer(offer) {
    $("incoming").hidden = !offer;
    if (!offer) return;
    const call = offer.call || {};
    text($("incoming-caller"), callerLabel(call));
    showOrigin($("incoming-origin"), call);
    text($("incoming-reason"), call.reason || "No reason given");
    text($("incoming-summary"), summaryAfterReason(call));
    text($("incoming-left"), Math.ceil(offer.expires_in_s));
    $("accept").disabled = busy;
  }

  function renderCall(current) {
    $("oncall").hidden = !current;
    if (!current) {
      ui.live = [];
      return;
    }
    const call = current.call || {};
    text($("oncall-caller"), callerLabel(call));
    showOrigin($("oncall-origin"), call);
    text($("oncall-summary"), call.summary);
    text($("oncall-timer"), seconds(call.talk_s));
    if ((current.live || []).length >= ui.live.length) ui.live = current.live.slice();
    renderLive();
    const select = $("return-node");
    const nodes = current.nodes || [];
    if (select.options.length !== nodes.length) {
      const keep = select.value;
      select.replaceChildren(...nodes.map((n) => make("option", "", n)));
      if (nodes.includes(keep)) select.value = keep;
      else if (nodes.includes("anything_else")) select.value = "anything_else";
    }
  }

  function renderLive() {
    renderTranscript($("live"), ui.live);
  }

  function tickCountdown() {
    const offer = ui.state && ui.state.offer;
    if (offer) {
      const left = offer.expires_in_s - (performance.now() - stateAt) / 1000;
      text($("incoming-left"), Math.max(0, Math.ceil(left)));
    }
  }

  let flashing = null;
  function flashTitle() {
    if (flashing) return;
    let on = false;
    flashing = setInterval(() => {
      const ringing = ui.state && ui.state.offer;
      if (!ringing) {
        clearInterval(flashing);
        flashing = null;
        document.title = "wacall · agent console";
        return;
      }
      on = !on;
      document.title = on ? "📞 Incoming call" : "wacall · agent console";
    }, 700);
  }

  // --- media -------------------------------------------------------------------------------------------
  function setMedia(state) {
    ui.media = state;
    text($("media-state"), state);
  }

  function gathered(peer, timeoutMs) {
    // wacall takes one complete offer (no trickle ICE), as Meta's answers do.
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (peer.iceGatheringState === "complete") {
          peer.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  async function accept() {
    const offer = ui.state && ui.state.offer;
    if (!offer || busy) return;
    busy = true;
    $("accept").disabled = true;
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      pc = new RTCPeerConnection({ iceServers: [] });
      for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
      pc.ontrack = (e) => {
        const el = $("remote-audio");
        const stream = e.streams[0] || new MediaStream([e.track]);
        el.srcObject = stream;
        el.play().catch(() => {});
        startMeter(stream, "caller-level", (rms) => {
          ui.callerPeak = Math.max(ui.callerPeak, rms);
        });
      };
      pc.onconnectionstatechange = () => pc && setMedia(pc.connectionState);
      setMedia("connecting");
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 3000);
      const answer = await api(`calls/${encodeURIComponent(offer.call_id)}/accept`, { sdp: pc.localDescription.sdp });
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      startMeter(mic, "mic-level");
    } catch (error) {
      endMedia();
      notice("Could not take the call: " + error.message, "error");
    } finally {
      busy = false;
      $("accept").disabled = false;
    }
  }

  // Level meters for both sides ("can I hear the caller, do they hear me?"). The caller's side goes through
  // the <audio> element's stream, which WebAudio can read only while the element plays it.
  function startMeter(stream, meterId, onLevel) {
    try {
      if (!meters) meters = { context: new AudioContext(), timers: [] };
      const analyser = meters.context.createAnalyser();
      analyser.fftSize = 1024;
      meters.context.createMediaStreamSource(stream).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      meters.timers.push(
        setInterval(() => {
          analyser.getFloatTimeDomainData(samples);
          let sum = 0;
          for (const s of samples) sum += s * s;
          const rms = Math.sqrt(sum / samples.length);
          $(meterId).value = Math.min(1, rms * 4);
          if (onLevel) onLevel(rms);
        }, 100),
      );
    } catch (_) {
      /* a level meter is a nicety; the call works without it */
    }
  }

  function endMedia() {
    if (meters) {
      for (const timer of meters.timers) clearInterval(timer);
      meters.context.close().catch(() => {});
      meters = null;
    }
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
      pc = null;
    }
    if (mic) {
      for (const track of mic.getTracks()) track.stop();
      mic = null;
    }
    $("remote-audio").srcObject = null;
    $("mic-level").value = 0;
    $("caller-level").value = 0;
    if (ui.media !== "idle") setMedia("idle");
  }

  // --- actions -----------------------------------------------------------------------------------------
  async function act(work) {
    try {
      const state = await work();
      if (state && state.me) render(state);
    } catch (error) {
      if (error.status === 401) showSignIn();
      notice(error.message, "error");
    }
  }

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const session = await api("signin", { agent: $("agent-id").value.trim(), token: $("agent-token").value });
      $("agent-token").value = "";
      notice("", "info");
      signedIn(session);
    } catch (error) {
      notice(error.message, "error");
    }
  });

  $("toggle-status").addEventListener("click", () =>
    act(() => api("status", { status: ui.state && ui.state.me.status === "away" ? "available" : "away" })),
  );

  $("sign-out").addEventListener("click", () =>
    act(async () => {
      await api("signout", {});
      showSignIn();
    }),
  );

  $("accept").addEventListener("click", accept);

  $("decline").addEventListener("click", () => {
    const offer = ui.state && ui.state.offer;
    if (offer) act(() => api(`calls/${encodeURIComponent(offer.call_id)}/decline`, {}));
  });

  // Tell wacall first, then close our audio: closed audio first would look like a dropped browser, and the
  // caller would be put back in the queue instead of being hung up on or handed back.
  $("hangup").addEventListener("click", async () => {
    const current = ui.state && ui.state.call;
    if (!current) return;
    await act(() => api(`calls/${encodeURIComponent(current.call_id)}/hangup`, {}));
    endMedia();
  });

  $("return").addEventListener("click", async () => {
    const current = ui.state && ui.state.call;
    if (!current) return;
    const node = $("return-node").value;
    await act(() => api(`calls/${encodeURIComponent(current.call_id)}/return`, { node }));
    endMedia();
  });

  window.addEventListener("pagehide", endMedia);
  setInterval(tickCountdown, 250);
  boot();
})();
