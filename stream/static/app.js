// emostream browser demo: camera + microphone to the server over WebRTC, face and voice
// results back on the "emotions" data channel. Plain JavaScript, standard APIs only (Chromium and Firefox),
// no build step and nothing loaded from elsewhere.
'use strict';

(() => {
  const WINDOW_MS = 10000; // chart history
  const STALE_MS = 1000; // boxes older than this fade out
  const MAX_PANELS = 4; // faces charted at once (the most recently seen)
  const GONE_MS = 3000; // a face's chart is dropped once it has not been seen this long
  const REUSE_MS = 2000; // a new track near a face that vanished this recently continues its chart
  const SILENCE_MS = 2000; // no voice message this long: the voice panel says silence
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const COLORS = {
    angry: '#e5484d',
    disgust: '#46a758',
    fear: '#8e4ec6',
    happy: '#f5a524',
    sad: '#3e63dd',
    surprise: '#e93d82',
    neutral: '#8b8d98',
    // the voice model's names for the same colours, and its own classes
    fearful: '#8e4ec6',
    surprised: '#e93d82',
    calm: '#12a594',
  };
  const SPARE_COLORS = ['#12a594', '#ad7f58', '#0090ff', '#d6409f', '#978365'];
  const UNSURE_COLOR = '#9a9a9a'; // a face whose label is only a guess (unsure: true)
  const TRACK_COLORS = ['#22d3ee', '#facc15', '#a3e635', '#fb7185', '#c084fc', '#fb923c'];

  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $('start'),
    stop: $('stop'),
    mirror: $('mirror'),
    stage: $('stage'),
    video: $('video'),
    overlay: $('overlay'),
    placeholder: $('placeholder'),
    faces: $('faces'),
    state: $('state'),
    ice: $('ice'),
    gathering: $('gathering'),
    dc: $('dc'),
    latency: $('latency'),
    rtt: $('rtt'),
    rate: $('rate'),
    model: $('model'),
    session: $('session'),
    error: $('error'),
    legend: $('legend'),
    chart: $('chart'),
    voiceSpeech: $('voice-speech'),
    voiceLabel: $('voice-label'),
    voiceModel: $('voice-model'),
    voiceLegend: $('voice-legend'),
    voiceChart: $('voice-chart'),
  };

  // ?token=... is sent as a bearer token when the server requires one.
  const token = new URLSearchParams(location.search).get('token');

  let pc = null;
  let dc = null;
  let stream = null;
  let sessionId = null;
  let sessionToken = null; // the session's own bearer token, for ending it
  let statsTimer = null;
  let latest = null; // {msg, at}
  let labels = []; // class names in the server's order
  const history = new Map(); // track key -> {id, points: [{t, scores, label}], last}
  const arrivals = []; // arrival times, for the results rate
  let voiceLabels = []; // the voice model's class names, in its order
  const voice = new Map(); // audio track -> {name, points: [{t, scores, label, speech}], last}
  const aliases = new Map(); // track key -> the key of the chart it continues (a camera cut)
  let voiceLast = null; // arrival of the last voice message

  function headers(extra = {}) {
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function colorOf(label) {
    if (COLORS[label]) return COLORS[label];
    const i = labels.indexOf(label);
    return SPARE_COLORS[(i < 0 ? 0 : i) % SPARE_COLORS.length];
  }

  function trackKey(face, index) {
    return face.track_id === null || face.track_id === undefined ? `n${index}` : `t${face.track_id}`;
  }

  function trackName(face, index) {
    return face.track_id === null || face.track_id === undefined
      ? `Face ${index + 1}`
      : `Face #${face.track_id}`;
  }

  function trackColor(key) {
    const n = parseInt(key.slice(1), 10) || 0;
    return TRACK_COLORS[n % TRACK_COLORS.length];
  }

  // ---- connection -------------------------------------------------------------------------

  function showState() {
    const conn = pc ? pc.connectionState || pc.iceConnectionState : 'closed';
    setText(ui.state, conn);
    ui.state.dataset.state = conn;
    setText(ui.ice, pc ? pc.iceConnectionState : 'closed');
    setText(ui.gathering, pc ? pc.iceGatheringState : '–');
    setText(ui.dc, dc ? dc.readyState : 'closed');
    ui.dc.dataset.state = dc ? dc.readyState : 'closed';
  }

  function iceGatheringComplete(peer, timeoutMs) {
    // The server does not trickle ICE: the offer must carry every candidate.
    if (peer.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        peer.removeEventListener('icegatheringstatechange', check);
        peer.removeEventListener('icecandidate', onCandidate);
        resolve();
      };
      const check = () => {
        if (peer.iceGatheringState === 'complete') done();
      };
      const onCandidate = (e) => {
        if (!e.candidate) done();
      };
      const timer = setTimeout(done, timeoutMs); // go with what we have
      peer.addEventListener('icegatheringstatechange', check);
      peer.addEventListener('icecandidate', onCandidate);
    });
  }

  async function openMedia() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new Error(
        'The camera needs a secure context: open this page over https, or as http://localhost / http://127.0.0.1.',
      );
    }
    const video = { width: { ideal: 640 }, height: { ideal: 480 } };
    try {
      return await navigator.mediaDevices.getUserMedia({ video, audio: true });
    } catch (err) {
      if (err && (err.name === 'NotAllowedError' || err.name === 'SecurityError')) throw err;
      // No (usable) microphone: the face analysis still works with the camera alone.
      const s = await navigator.mediaDevices.getUserMedia({ video, audio: false });
      showError('No microphone available: sending the camera only.');
      return s;
    }
  }

  async function start() {
    showError('');
    ui.start.disabled = true;
    try {
      stream = await openMedia();
      ui.video.srcObject = stream;
      ui.placeholder.hidden = true;
      ui.stop.disabled = false;

      pc = new RTCPeerConnection({ iceServers: [] });
      const peer = pc;
      for (const ev of ['connectionstatechange', 'iceconnectionstatechange', 'icegatheringstatechange']) {
        peer.addEventListener(ev, showState);
      }
      peer.addEventListener('connectionstatechange', () => {
        if (peer === pc && peer.connectionState === 'failed') {
          showError('The connection failed (no network path to the server?).');
        }
      });
      for (const track of stream.getTracks()) {
        peer.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      }
      dc = peer.createDataChannel('emotions');
      dc.addEventListener('open', showState);
      dc.addEventListener('close', showState);
      dc.addEventListener('message', (e) => onMessage(e.data));
      showState();

      await peer.setLocalDescription(await peer.createOffer());
      await iceGatheringComplete(peer, ICE_GATHER_TIMEOUT_MS);
      if (peer !== pc) return; // stopped meanwhile
      const res = await fetch('v1/offer', {
        method: 'POST',
        headers: headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ sdp: peer.localDescription.sdp, type: 'offer' }),
      });
      let body = null;
      try {
        body = await res.json();
      } catch (_) {
        body = null;
      }
      if (!res.ok) {
        const why = body && body.detail ? body.detail : res.statusText;
        throw new Error(`The server refused the offer (${res.status}): ${why}`);
      }
      if (peer !== pc) {
        endSession(body.session_id, body.session_token);
        return;
      }
      sessionId = body.session_id;
      sessionToken = body.session_token || null;
      setText(ui.session, sessionId);
      await peer.setRemoteDescription({ type: 'answer', sdp: body.sdp });
      statsTimer = setInterval(pollStats, 1000);
    } catch (err) {
      const text = err && err.message ? err.message : String(err);
      stop();
      showError(text);
    }
  }

  function endSession(id, secret) {
    if (!id) return;
    fetch(`v1/sessions/${encodeURIComponent(id)}`, {
      method: 'DELETE',
      headers: secret ? { Authorization: `Bearer ${secret}` } : headers(),
      keepalive: true,
    }).catch(() => {});
  }

  function stop() {
    clearInterval(statsTimer);
    statsTimer = null;
    endSession(sessionId, sessionToken);
    sessionId = null;
    sessionToken = null;
    if (dc) dc.close();
    if (pc) pc.close();
    if (stream) for (const t of stream.getTracks()) t.stop();
    dc = null;
    pc = null;
    stream = null;
    ui.video.srcObject = null;
    ui.placeholder.hidden = false;
    latest = null;
    history.clear();
    voice.clear();
    aliases.clear();
    voiceLast = null;
    arrivals.length = 0;
    labels = [];
    voiceLabels = [];
    renderLegend(ui.legend, labels);
    renderLegend(ui.voiceLegend, voiceLabels);
    ui.voiceSpeech.dataset.speech = '';
    setText(ui.voiceSpeech, '–');
    showVoiceLabel('–', false);
    setText(ui.model, '–');
    setText(ui.voiceModel, '–');
    showError('');
    renderFaces([]);
    setText(ui.latency, '–');
    setText(ui.rtt, '–');
    setText(ui.rate, '–');
    setText(ui.session, '–');
    ui.start.disabled = false;
    ui.stop.disabled = true;
    showState();
  }

  async function pollStats() {
    if (!pc) return;
    const peer = pc;
    let stats;
    try {
      stats = await peer.getStats();
    } catch (_) {
      return;
    }
    let pair = null;
    let selectedId = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) selectedId = r.selectedCandidatePairId;
    });
    stats.forEach((r) => {
      if (r.type !== 'candidate-pair') return;
      if (r.id === selectedId || r.selected || (!selectedId && r.nominated && r.state === 'succeeded')) {
        pair = r;
      }
    });
    if (pair && typeof pair.currentRoundTripTime === 'number') {
      setText(ui.rtt, (pair.currentRoundTripTime * 1000).toFixed(1));
    }
  }

  // ---- results ----------------------------------------------------------------------------

  function onMessage(data) {
    if (!pc) return; // stopped: a message still in flight must not bring values back
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (msg && msg.type === 'error') {
      // e.g. broker_unavailable: the session lives on; face messages resume by themselves
      showError(`Server: ${msg.detail || msg.code}`);
      return;
    }
    if (msg && msg.type === 'voice') {
      onVoice(msg);
      return;
    }
    if (!msg || msg.type !== 'face' || !Array.isArray(msg.faces)) return;
    if (ui.error.textContent.startsWith('Server: ')) showError('');
    const now = performance.now();
    latest = { msg, at: now };
    arrivals.push(now);
    while (arrivals.length && arrivals[0] < now - 2000) arrivals.shift();
    setText(ui.rate, (arrivals.length / 2).toFixed(1));
    if (typeof msg.latency_ms === 'number') setText(ui.latency, msg.latency_ms.toFixed(1));
    if (msg.model) setText(ui.model, msg.model);

    msg.faces.forEach((face, i) => {
      if (!face.scores) return;
      for (const label of Object.keys(face.scores)) {
        if (!labels.includes(label)) {
          labels.push(label);
          renderLegend();
        }
      }
      const key = chartKey(trackKey(face, i), face.box, now);
      let h = history.get(key);
      if (!h) {
        h = { name: trackName(face, i), points: [], last: now };
        history.set(key, h);
      }
      h.points.push({ t: now, scores: face.scores, label: face.label });
      h.last = now;
      h.box = face.box;
    });
    forgetGone(now);
    renderFaces(msg.faces);
  }

  // A camera cut gives the same face a new track id: a new track that appears where a face
  // vanished less than REUSE_MS ago, at about its size, continues that face's chart.
  function chartKey(key, box, now) {
    if (aliases.has(key)) return aliases.get(key);
    if (history.has(key) || !Array.isArray(box)) return key;
    let best = null;
    for (const [other, h] of history) {
      const gone = now - h.last;
      if (gone <= 0 || gone > REUSE_MS || !h.box || [...aliases.values()].includes(other)) continue;
      if (!sameFace(h.box, box)) continue;
      if (!best || h.last > history.get(best).last) best = other;
    }
    if (best === null) return key;
    aliases.set(key, best);
    return best;
  }

  function sameFace(a, b) {
    const [ax, ay, aw, ah] = a;
    const [bx, by, bw, bh] = b;
    const size = Math.max(aw, ah, bw, bh, 1);
    const dist = Math.hypot(ax + aw / 2 - (bx + bw / 2), ay + ah / 2 - (by + bh / 2));
    const ratio = (bw * bh) / Math.max(1, aw * ah);
    return dist < 0.5 * size && ratio > 0.5 && ratio < 2;
  }

  // Charts of faces gone for GONE_MS go, with their aliases; old points scroll out.
  function forgetGone(now) {
    for (const [key, h] of history) {
      while (h.points.length && h.points[0].t < now - WINDOW_MS - 1000) h.points.shift();
      if (!h.points.length || now - h.last > GONE_MS) history.delete(key);
    }
    for (const [key, target] of aliases) if (!history.has(target)) aliases.delete(key);
  }

  // The voice panel's label: a class while there is speech, "silence" (greyed) otherwise.
  function showVoiceLabel(text, silent, unsure = false) {
    setText(ui.voiceLabel, text);
    ui.voiceLabel.dataset.silent = silent ? 'yes' : '';
    ui.voiceLabel.dataset.unsure = unsure ? 'yes' : '';
  }

  // One voice message per audio window (about every 0.5 s): speech windows carry scores,
  // silent ones only say so (speech: false), and break the chart's lines.
  function onVoice(msg) {
    const now = performance.now();
    const name = msg.track || 'audio';
    let h = voice.get(name);
    if (!h) {
      h = { name: `Audio track ${name}`, points: [], last: now };
      voice.set(name, h);
    }
    h.last = now;
    voiceLast = now;
    ui.voiceSpeech.dataset.speech = msg.speech ? 'yes' : 'no';
    setText(ui.voiceSpeech, msg.speech ? 'speech' : 'silence');
    if (msg.model) setText(ui.voiceModel, msg.model);
    if (msg.speech && msg.scores) {
      for (const label of Object.keys(msg.scores)) {
        if (!voiceLabels.includes(label)) {
          voiceLabels.push(label);
          renderLegend(ui.voiceLegend, voiceLabels);
        }
      }
      const pct = typeof msg.confidence === 'number' ? ` ${(100 * msg.confidence).toFixed(0)}%` : '';
      // unsure: the top probability is under results.unsure_below, the label only a guess
      const said = msg.unsure ? `unsure (${msg.label}?${pct})` : `${msg.label}${pct}`;
      showVoiceLabel(said, false, Boolean(msg.unsure));
      h.points.push({ t: now, scores: msg.scores, label: msg.label });
    } else {
      h.points.push({ t: now, scores: {}, label: null }); // a gap in the lines
      showVoiceLabel('silence', true);
    }
    while (h.points.length && h.points[0].t < now - WINDOW_MS - 1000) h.points.shift();
  }

  function renderLegend(el = ui.legend, names = labels) {
    el.replaceChildren(
      ...names.map((label) => {
        const item = document.createElement('span');
        item.className = 'legend-item';
        const sw = document.createElement('i');
        sw.style.background = colorOf(label);
        item.append(sw, label);
        return item;
      }),
    );
  }

  // One .face element per face in the latest message, reused by track id.
  function renderFaces(faces) {
    if (!faces.length) {
      const text = latest ? 'No face in view' : '';
      if (ui.faces.dataset.empty !== text) {
        ui.faces.replaceChildren();
        if (text) {
          const p = document.createElement('p');
          p.className = 'no-face';
          p.textContent = text;
          ui.faces.append(p);
        }
        ui.faces.dataset.empty = text;
      }
      return;
    }
    delete ui.faces.dataset.empty;
    const existing = new Map();
    for (const el of ui.faces.querySelectorAll('.face')) existing.set(el.dataset.key, el);
    for (const el of ui.faces.querySelectorAll('.no-face')) el.remove();
    const keep = new Set();
    faces.forEach((face, i) => {
      const key = trackKey(face, i);
      keep.add(key);
      let el = existing.get(key);
      if (!el) {
        el = buildFace(key, trackName(face, i));
        ui.faces.append(el);
      }
      // unsure: the top probability is under results.unsure_below; the guess stays beside it
      const pct = `${Math.round(face.confidence * 100)} %`;
      setText(el.querySelector('.face-label'), face.unsure ? 'unsure' : face.label);
      setText(el.querySelector('.face-conf'), face.unsure ? `${face.label}? ${pct}` : pct);
      el.dataset.label = face.label;
      el.dataset.unsure = face.unsure ? 'yes' : '';
      const bars = el.querySelector('.bars');
      for (const label of labels) {
        let row = bars.querySelector(`[data-label="${CSS.escape(label)}"]`);
        if (!row) {
          row = document.createElement('div');
          row.className = 'bar';
          row.dataset.label = label;
          const name = document.createElement('span');
          name.textContent = label;
          const track = document.createElement('span');
          track.className = 'bar-track';
          const fill = document.createElement('span');
          fill.className = 'bar-fill';
          fill.style.background = colorOf(label);
          track.append(fill);
          const value = document.createElement('span');
          value.className = 'bar-value';
          row.append(name, track, value);
          bars.append(row);
        }
        const p = (face.scores && face.scores[label]) || 0;
        row.querySelector('.bar-fill').style.width = `${(p * 100).toFixed(1)}%`;
        setText(row.querySelector('.bar-value'), p.toFixed(2));
        row.classList.toggle('top', label === face.label);
      }
    });
    for (const [key, el] of existing) if (!keep.has(key)) el.remove();
  }

  function buildFace(key, name) {
    const el = document.createElement('div');
    el.className = 'face';
    el.dataset.key = key;
    const head = document.createElement('div');
    head.className = 'face-head';
    const sw = document.createElement('i');
    sw.className = 'swatch';
    sw.style.background = trackColor(key);
    const title = document.createElement('span');
    title.className = 'face-track';
    title.textContent = name;
    const label = document.createElement('span');
    label.className = 'face-label';
    const conf = document.createElement('span');
    conf.className = 'face-conf';
    head.append(sw, title, label, conf);
    const bars = document.createElement('div');
    bars.className = 'bars';
    el.append(head, bars);
    return el;
  }

  // ---- drawing ----------------------------------------------------------------------------

  // Size a canvas's backing store to its CSS box (times devicePixelRatio); return the
  // context scaled to CSS pixels, and the CSS size.
  function fit(canvas, cssHeight) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = cssHeight === undefined ? canvas.clientHeight : cssHeight;
    if (cssHeight !== undefined && canvas.style.height !== `${h}px`) canvas.style.height = `${h}px`;
    const bw = Math.max(1, Math.round(w * dpr));
    const bh = Math.max(1, Math.round(h * dpr));
    if (canvas.width !== bw || canvas.height !== bh) {
      canvas.width = bw;
      canvas.height = bh;
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  // Where the picture lies inside the <video> box (object-fit: contain letterboxes it).
  function pictureRect(video, boxW, boxH) {
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (!vw || !vh || !boxW || !boxH) return null;
    const fitStyle = getComputedStyle(video).objectFit;
    let sx;
    let sy;
    if (fitStyle === 'fill') {
      sx = boxW / vw;
      sy = boxH / vh;
    } else {
      const s = fitStyle === 'cover' ? Math.max(boxW / vw, boxH / vh) : Math.min(boxW / vw, boxH / vh);
      sx = s;
      sy = s;
    }
    return { x: (boxW - vw * sx) / 2, y: (boxH - vh * sy) / 2, sx, sy, vw, vh };
  }

  function drawOverlay(now) {
    const { ctx, w, h } = fit(ui.overlay);
    if (!latest || !stream) return;
    const age = now - latest.at;
    if (age > STALE_MS * 3) return;
    const msg = latest.msg;
    const r = pictureRect(ui.video, w, h);
    if (!r || !msg.width || !msg.height) return;
    // Boxes are in the frame the server decoded; the video element may show another size.
    const kx = (r.vw / msg.width) * r.sx;
    const ky = (r.vh / msg.height) * r.sy;
    const mirror = ui.mirror.checked;
    ctx.globalAlpha = age > STALE_MS ? 0.35 : 1;
    ctx.font = '600 14px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    msg.faces.forEach((face, i) => {
      const [bx, by, bw, bh] = face.box;
      let x = r.x + bx * kx;
      if (mirror) x = w - x - bw * kx;
      const y = r.y + by * ky;
      const fw = bw * kx;
      const fh = bh * ky;
      const color = face.unsure ? UNSURE_COLOR : colorOf(face.label);
      ctx.lineWidth = 3;
      ctx.strokeStyle = color;
      ctx.strokeRect(x, y, fw, fh);
      const pct = `${Math.round(face.confidence * 100)}%`;
      const said = face.unsure ? `unsure (${face.label}? ${pct})` : `${face.label} ${pct}`;
      const text = `${trackName(face, i)} ${said}`;
      const tw = ctx.measureText(text).width + 10;
      const ty = y >= 22 ? y : y + fh + 22; // label above the box, or below at the top edge
      ctx.fillStyle = color;
      ctx.fillRect(x - 1.5, ty - 20, tw, 20);
      ctx.fillStyle = '#111';
      ctx.fillText(text, x + 4, ty - 3);
    });
    ctx.globalAlpha = 1;
  }

  // Score charts, one panel per track (a face, or an audio track): one line per class over
  // the last WINDOW_MS, the latest top class drawn last and thicker.
  function drawPanels(canvas, tracks, names, now, waiting) {
    canvas.dataset.panels = String(tracks.length); // what is charted, for tests and tools
    const panelH = 140;
    const gap = 10;
    const height = Math.max(1, tracks.length) * (panelH + gap);
    const { ctx, w } = fit(canvas, height);
    const css = getComputedStyle(canvas);
    const fg = css.color || '#ddd';
    ctx.font = '12px system-ui, sans-serif';
    if (!tracks.length) {
      ctx.fillStyle = fg;
      ctx.globalAlpha = 0.6;
      ctx.textBaseline = 'middle';
      ctx.textAlign = 'center';
      ctx.fillText(stream ? waiting : 'Press Start to begin', w / 2, panelH / 2);
      ctx.globalAlpha = 1;
      ctx.textAlign = 'left';
      return;
    }
    const left = 34;
    const right = 8;
    tracks.forEach((track, k) => {
      const top = k * (panelH + gap);
      const plotTop = top + 20;
      const plotH = panelH - 38;
      const plotW = w - left - right;
      const tx = (t) => left + plotW * (1 - (now - t) / WINDOW_MS);
      const ty = (p) => plotTop + plotH * (1 - p);
      const scored = track.points.filter((pt) => pt.label);
      const lastLabel = scored.length ? scored[scored.length - 1].label : null;

      // title
      ctx.textBaseline = 'alphabetic';
      ctx.textAlign = 'left';
      ctx.fillStyle = fg;
      ctx.font = '600 13px system-ui, sans-serif';
      ctx.fillText(lastLabel ? `${track.name} — ${lastLabel}` : track.name, left, top + 14);
      ctx.font = '12px system-ui, sans-serif';

      // grid and axes
      ctx.strokeStyle = fg;
      ctx.globalAlpha = 0.18;
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const p of [0, 0.25, 0.5, 0.75, 1]) {
        ctx.moveTo(left, Math.round(ty(p)) + 0.5);
        ctx.lineTo(left + plotW, Math.round(ty(p)) + 0.5);
      }
      for (let s = 0; s <= WINDOW_MS / 1000; s += 2) {
        const x = Math.round(tx(now - s * 1000)) + 0.5;
        ctx.moveTo(x, plotTop);
        ctx.lineTo(x, plotTop + plotH);
      }
      ctx.stroke();
      ctx.globalAlpha = 0.7;
      ctx.fillStyle = fg;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (const p of [0, 0.5, 1]) ctx.fillText(p.toFixed(1), left - 5, ty(p));
      ctx.textBaseline = 'top';
      for (let s = 0; s <= WINDOW_MS / 1000; s += 2) {
        // the end labels stay inside the plot's width
        ctx.textAlign = s === 0 ? 'right' : s === WINDOW_MS / 1000 ? 'left' : 'center';
        ctx.fillText(s === 0 ? 'now' : `-${s}s`, tx(now - s * 1000), plotTop + plotH + 4);
      }
      ctx.globalAlpha = 1;

      ctx.save();
      ctx.beginPath();
      ctx.rect(left, plotTop - 2, plotW, plotH + 4);
      ctx.clip();
      const order = names.filter((l) => l !== lastLabel).concat(lastLabel ? [lastLabel] : []);
      for (const label of order) {
        const top1 = label === lastLabel;
        ctx.strokeStyle = colorOf(label);
        ctx.lineWidth = top1 ? 2.5 : 1.25;
        ctx.globalAlpha = top1 ? 1 : 0.75;
        ctx.beginPath();
        let prevT = null;
        for (const pt of track.points) {
          const p = pt.scores[label];
          if (typeof p !== 'number') {
            prevT = null; // no score here (no speech, face out of view): break the line
            continue;
          }
          const x = tx(pt.t);
          const y = ty(p);
          // a gap of more than a second (face out of view) breaks the line
          if (prevT === null || pt.t - prevT > 1000) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
          prevT = pt.t;
        }
        ctx.stroke();
      }
      ctx.restore();
      ctx.globalAlpha = 1;
    });
  }

  function recent(tracks) {
    return [...tracks.values()]
      .filter((h) => h.points.some((pt) => pt.label)) // never an empty chart
      .sort((a, b) => b.last - a.last)
      .slice(0, MAX_PANELS);
  }

  function frame() {
    const now = performance.now();
    forgetGone(now);
    if (voiceLast !== null && now - voiceLast > SILENCE_MS && ui.voiceLabel.dataset.silent !== 'yes') {
      ui.voiceSpeech.dataset.speech = 'no';
      setText(ui.voiceSpeech, 'silence');
      showVoiceLabel('silence', true); // no voice message for a while: nothing is being said
    }
    drawOverlay(now);
    drawPanels(ui.chart, recent(history), labels, now, 'Waiting for a face…');
    drawPanels(ui.voiceChart, recent(voice), voiceLabels, now, 'Waiting for speech…');
    requestAnimationFrame(frame);
  }

  ui.start.addEventListener('click', start);
  ui.stop.addEventListener('click', stop);
  ui.mirror.addEventListener('change', () => {
    ui.stage.classList.toggle('mirrored', ui.mirror.checked);
  });
  window.addEventListener('pagehide', () => endSession(sessionId, sessionToken));
  showState();
  requestAnimationFrame(frame);
})();
