// tech.js — the technician page: no media; the WebSocket gives welcome + roster. Every second one page of
// GET /api/meetings/{id}/stats (sorted and paged by the server, 50 rows) fills the table and feeds live <canvas>
// charts: the meeting's bitrate, loss and RTT over 5 minutes, and the same for the site of a clicked row.
import { start, $, D, esc, token } from './app.js';
import { t, getLang } from './i18n.js';

const PAGE = 50, KEEP = 300, SITES = 200, SPAN = 300e3, GAP = 5000; // rows, points per series, site histories, ms
const LOSS_MAX = 5, RTT_MAX = 400; // commune VSAT profile: a row beyond either is highlighted
const BLUE = '#1565c0', GREEN = '#2e7d32', RED = '#c62828', PURPLE = '#7b1fa2', WARN = '#b26a00', INK = '#5b6470';

// [key in the row ('c.' = client report), header label, server sort key when sortable, left-aligned]
const COLS = [
  ['site_id', 'col.id', 'site_id'], ['name', 'col.name', 'name', 1], ['role', 'col.role', 0, 1], ['state', 'col.state', 0, 1],
  ['kbps_in', 'col.kin', 'kbps_in'], ['kbps_out', 'col.kout', 'kbps_out'], ['loss_pct', 'col.loss', 'loss'], ['rtt_ms', 'col.rtt', 'rtt'],
  ['estimate_kbps', 'col.est'],
  ['c.frames_decoded', 'col.frames'], ['c.audio_samples', 'col.samples'], ['c.packets_lost', 'col.lost'],
  ['c.rtt_ms', 'col.crtt'], ['c.kbps_in', 'col.ckin'], ['c.kbps_out', 'col.ckout'],
];
// Charts: [title, unit, [[series, legend, colour, dashed]], threshold, smallest y range]
const AGG = [
  ['ch.total', 'kbit/s', [['kin', 'ch.in', BLUE], ['kout', 'ch.out', GREEN]], null, 100],
  ['ch.loss', '%', [['lavg', 'ch.mean', BLUE], ['lmax', 'ch.worst', RED]], LOSS_MAX, 1],
  ['ch.rtt', 'ms', [['ravg', 'ch.mean', BLUE], ['rmax', 'ch.worst', RED]], RTT_MAX, 50],
];
const ONE = [
  ['ch.rate', 'kbit/s', [['kin', 'ch.in', BLUE], ['kout', 'ch.out', GREEN]], null, 100],
  ['ch.loss', '%', [['loss', 'ch.bridge', RED]], LOSS_MAX, 1],
  ['ch.rtt', 'ms', [['rtt', 'ch.bridge', BLUE], ['crtt', 'ch.client', PURPLE, 1]], RTT_MAX, 50],
];

let sort = 'loss', desc = true, page = 0, sel = null, filter = '';
let data = null, okAt = null, err = null, busy = false, polling = false, timer = 0, seq = 0, ctl = null;
const series = (keys) => ({ t: [], s: Object.fromEntries(keys.map((k) => [k, []])), seen: 0, picked: 0 });
const agg = series(['kin', 'kout', 'lavg', 'lmax', 'ravg', 'rmax']); // meeting-wide (or current page: agg.part)
const hist = new Map(); // site_id → its series, recorded while it is on the fetched page

const num = (v) => (typeof v === 'number' && isFinite(v) ? v : null);
const val = (p, k) => (k.startsWith('c.') ? p.client?.[k.slice(2)] : p[k]) ?? null;
const fmt = (v) => (v == null ? '–' : typeof v === 'number' ? (Number.isInteger(v) ? v.toLocaleString('en').replace(/,/g, ' ') : v.toFixed(1)) : v);
const label = (k, v) => (v == null ? '–' : k === 'role' ? t('role.' + v) : k === 'state' ? t('ps.' + v) : fmt(v));
const fold = (s) => String(s).normalize('NFD').replace(/[\u0300-\u036f]/g, '').replace(/đ/gi, 'd').toLowerCase();
const clock = (d) => d.toLocaleTimeString(getLang() === 'vi' ? 'vi-VN' : 'en-GB');
const pages = () => Math.max(1, Math.ceil((data?.total || 0) / PAGE));
const over = (k, v) => v != null && ((k.endsWith('loss_pct') && v > LOSS_MAX) || (k.endsWith('rtt_ms') && v > RTT_MAX));
const warn = (p) => over('loss_pct', num(p.loss_pct)) || over('rtt_ms', num(p.rtt_ms)) || over('rtt_ms', num(p.client?.rtt_ms));

function push(h, now, v) {
  h.t.push(now);
  for (const k in h.s) h.s[k].push(v[k] ?? null);
  if (h.t.length > KEEP) { h.t.shift(); for (const k in h.s) h.s[k].shift(); }
}

/** Adds one point to the meeting-wide series and to the history of every site on the page. */
function record(d) {
  const now = Date.now(), P = d.peers || [];
  const vals = (k) => P.map((p) => num(p[k])).filter((v) => v != null);
  const sum = (a) => (a.length || !P.length ? a.reduce((x, y) => x + y, 0) : null);
  const mean = (a) => (a.length ? sum(a) / a.length : null), max = (a) => (a.length ? Math.max(...a) : null);
  const L = vals('loss_pct'), R = vals('rtt_ms');
  agg.part = P.length < d.total;
  push(agg, now, { kin: sum(vals('kbps_in')), kout: sum(vals('kbps_out')), lavg: mean(L), lmax: max(L), ravg: mean(R), rmax: max(R) });
  for (const p of P) {
    let h = hist.get(p.site_id);
    if (!h) hist.set(p.site_id, (h = series(['kin', 'kout', 'loss', 'rtt', 'crtt'])));
    h.seen = now;
    h.name = p.name;
    push(h, now, { kin: num(p.kbps_in), kout: num(p.kbps_out), loss: num(p.loss_pct), rtt: num(p.rtt_ms), crtt: num(p.client?.rtt_ms) });
  }
  // Over the limit: drop never-selected sites first (least recently seen), then the one selected longest ago.
  while (hist.size > SITES) {
    let id = null, o = null;
    for (const [k, h] of hist) if (k !== sel && (!o || h.picked < o.picked || (h.picked === o.picked && h.seen < o.seen))) { id = k; o = h; }
    hist.delete(id);
  }
}

async function poll() {
  clearTimeout(timer);
  ctl?.abort();
  const my = ++seq, c = (ctl = new AbortController()), to = setTimeout(() => c.abort(), 5000);
  busy = true;
  renderInfo();
  try {
    const q = `token=${encodeURIComponent(token)}&sort=${sort}&order=${desc ? 'desc' : 'asc'}&offset=${page * PAGE}&limit=${PAGE}`;
    const r = await fetch(`/api/meetings/${encodeURIComponent(D.welcome?.meeting_id)}/stats?${q}`, { cache: 'no-store', signal: c.signal });
    if (!r.ok) throw new Error((await r.json().catch(() => null))?.error || 'HTTP ' + r.status);
    const d = await r.json();
    if (my !== seq) return;
    // The page went past the end (sites left): go to the last one.
    if (page && d.offset >= d.total) { page = Math.max(0, Math.ceil(d.total / PAGE) - 1); timer = setTimeout(poll); return; }
    data = D.stats = d;
    okAt = new Date();
    err = null;
    record(d);
  } catch (e) {
    if (my !== seq) return;
    err = e.name === 'AbortError' ? t('tech.timeout') : e.message;
    D.lastError = t('tech.fail', { msg: err });
    push(agg, Date.now(), {}); // a gap in the meeting-wide lines
  } finally {
    clearTimeout(to);
  }
  busy = false;
  render();
  timer = setTimeout(poll, 1000);
}

function renderHead() {
  $('#cols').innerHTML = COLS.map(([k, l, s, left]) => {
    const a = !s ? '' : s === sort ? (desc ? 'descending' : 'ascending') : 'none';
    return `<th${left ? ' class="l"' : ''}${s ? ` data-s="${s}" aria-sort="${a}" tabindex="0"` : ''}>${t(l)}${s === sort ? (desc ? ' ▾' : ' ▴') : ''}</th>`;
  }).join('');
}

function renderInfo() {
  const u = $('#updated');
  u.textContent = okAt ? t('tech.updated', { t: clock(okAt) }) : t('tech.loading');
  u.classList.toggle('busy', busy);
  const e = $('#fetcherr');
  e.hidden = !err;
  if (err) e.textContent = t('tech.fail', { msg: err }) + (okAt ? ' ' + t('tech.stale', { t: clock(okAt) }) : '');
}

function render() {
  renderInfo();
  const f = fold(filter.trim()), P = data?.peers || [];
  const rows = P.filter((p) => !f || fold(p.name).includes(f) || String(p.site_id) === f);
  const focus = document.activeElement?.closest?.('#peers tbody tr')?.dataset.site;
  $('#peers tbody').innerHTML = rows.map((p) => {
    const w = warn(p), s = p.site_id === sel;
    return `<tr class="ps-${esc(p.state)}${w ? ' warn' : ''}${s ? ' sel' : ''}" data-site="${p.site_id}" tabindex="0" aria-selected="${s}"${w ? ` title="${esc(t('tech.warn'))}"` : ''}>` +
      COLS.map(([k, , , left]) => {
        const v = val(p, k);
        return `<td class="${left ? 'l' : ''}${over(k, v) ? ' bad' : ''}">${esc(label(k, v))}${k === 'name' && p.muted ? ` <small class="mic">${esc(t('micOff'))}</small>` : ''}</td>`;
      }).join('') + '</tr>';
  }).join('') || `<tr><td class="l" colspan="${COLS.length}">${esc(t(P.length ? 'tech.nomatch' : data ? 'tech.none' : 'tech.loading'))}</td></tr>`;
  if (focus) $(`#peers tbody tr[data-site="${focus}"]`)?.focus();
  $('#pageno').textContent = t('tech.page', { x: page + 1, y: pages() });
  $('#prev').disabled = page <= 0;
  $('#next').disabled = page >= pages() - 1;
  $('#bridge').textContent = data ? t('tech.sum', { n: fmt(data.total), c: fmt(data.connected), s: fmt(data.bridge?.shards) }) : '';
  // Invited sites (roster) that are not connected, by name; at most 30 names.
  const chair = D.welcome?.chair_site_id;
  const inv = D.roster.filter((s) => s.site_id !== chair);
  const off = inv.filter((s) => s.state !== 'connected');
  $('#counts').textContent = inv.length ? t('chair.count', { c: inv.length - off.length, n: inv.length }) : '';
  $('#offline').textContent = off.length
    ? `${t('tech.offline', { n: off.length })} ${off.slice(0, 30).map((s) => s.name).join(', ')}${off.length > 30 ? ' ' + t('tech.more', { n: off.length - 30 }) : ''}`
    : '';
  draw();
}

// ---- charts ---------------------------------------------------------------------------------------------------

const axis = (v) => String(+v.toFixed(v && Math.abs(v) < 1 ? 2 : 1));

/** Draws the series `lines` of history `h` on canvas `cv` over the last `span` ms (nulls and gaps break lines). */
function plot(cv, h, [title, unit, lines, thr, floor], span) {
  const W = cv.clientWidth, H = cv.clientHeight, r = devicePixelRatio || 1;
  cv.setAttribute('aria-label', title);
  if (!W || !H) return;
  if (cv.width !== Math.round(W * r) || cv.height !== Math.round(H * r)) { cv.width = Math.round(W * r); cv.height = Math.round(H * r); }
  const g = cv.getContext('2d'), L = 44, R = 8, T = 18, B = 16, pw = W - L - R, ph = H - T - B;
  g.setTransform(r, 0, 0, r, 0, 0);
  g.clearRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  const now = Date.now(), x0 = now - span, X = (tm) => L + ((tm - x0) / span) * pw;
  let top = floor, any = false;
  for (const [k] of lines) h?.s[k].forEach((v, i) => { if (v != null && h.t[i] >= x0) { any = true; top = Math.max(top, v); } });
  const e = 10 ** Math.floor(Math.log10(top)), f = [1, 2, 5, 10].find((m) => m * e >= top), m = f * e, n = f === 5 || f === 10 ? 5 : 4;
  const [div, u] = unit === 'kbit/s' && m >= 10000 ? [1000, 'Mbit/s'] : [1, unit];
  const Y = (v) => T + ph - (v / m) * ph;
  g.fillStyle = INK;
  g.strokeStyle = '#e3e6ea';
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let i = 0; i <= n; i++) {
    const y = Math.round(Y((m * i) / n)) + 0.5;
    g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
    g.fillText(axis((m * i) / n / div), L - 4, y);
  }
  const step = ([60, 120, 300, 600, 1800, 3600].find((s) => span / 1000 / s <= 6) || 7200) * 1000;
  g.textBaseline = 'top';
  g.textAlign = 'left';
  for (let k = 0, edge = W; k * step <= span; k++) {
    const x = Math.round(X(now - k * step)) + 0.5, s = k ? t('ch.min', { n: '−' + (k * step) / 60000 }) : t('ch.now');
    const w = g.measureText(s).width, lx = Math.max(L, Math.min(x - w / 2, W - R - w));
    g.beginPath(); g.moveTo(x, T); g.lineTo(x, T + ph + 3); g.stroke();
    if (lx + w + 6 <= edge) { g.fillText(s, lx, T + ph + 3); edge = lx; } // labels that would overlap are left out
  }
  // Legend on the top line, after the unit.
  g.textAlign = 'left';
  g.textBaseline = 'middle';
  g.fillText(u, 2, 8);
  const leg = lines.map(([, l, c, d]) => [t(l), c, d]);
  if (thr != null && thr <= m) leg.push([t('ch.thr'), WARN, 1]);
  let lx = L + 4;
  for (const [l, c, d] of leg) {
    g.strokeStyle = c; g.lineWidth = 2; g.setLineDash(d ? [4, 3] : []);
    g.beginPath(); g.moveTo(lx, 8.5); g.lineTo(lx + 14, 8.5); g.stroke();
    g.fillStyle = INK; g.fillText(l, lx + 18, 8);
    lx += 26 + g.measureText(l).width;
  }
  g.save();
  g.beginPath(); g.rect(L, T, pw, ph); g.clip();
  if (thr != null && thr <= m) {
    g.strokeStyle = WARN; g.lineWidth = 1.2; g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(L, Y(thr)); g.lineTo(L + pw, Y(thr)); g.stroke();
  }
  for (const [k, , c, d] of h ? lines : []) {
    g.strokeStyle = g.fillStyle = c; g.lineWidth = 1.8; g.setLineDash(d ? [5, 3] : []);
    g.beginPath();
    let run = 0, px = 0, py = 0;
    h.s[k].forEach((v, i) => {
      if (v == null || (i && h.t[i] - h.t[i - 1] > GAP)) {
        if (run === 1) g.fillRect(px - 1.5, py - 1.5, 3, 3); // a lone point between gaps
        run = 0;
        if (v == null) return;
      }
      px = X(h.t[i]); py = Y(v);
      if (run++) g.lineTo(px, py); else g.moveTo(px, py);
    });
    if (run === 1) g.fillRect(px - 1.5, py - 1.5, 3, 3);
    g.stroke();
  }
  g.restore();
  g.setLineDash([]);
  if (!any) { g.textAlign = 'center'; g.fillStyle = INK; g.fillText(t('ch.nodata'), L + pw / 2, T + ph / 2); }
}

function draw() {
  const note = agg.part ? ` (${t('tech.onpage')})` : '';
  AGG.forEach((c, i) => {
    const cv = $('#a' + i), title = t(c[0]) + note;
    cv.previousElementSibling.textContent = title;
    plot(cv, agg, [title, ...c.slice(1)], SPAN);
  });
  const h = sel == null ? null : hist.get(sel);
  const on = data?.peers?.some((p) => p.site_id === sel);
  $('#site-h').textContent = sel == null ? t('ch.pick') : t('ch.site', { n: h?.name ?? sel }) + (on ? '' : ' ' + t('ch.gone'));
  $('#unsel').hidden = sel == null;
  const span = h?.t.length ? Math.max(SPAN, Date.now() - h.t[0]) : SPAN;
  ONE.forEach((c, i) => {
    const cv = $('#s' + i), title = t(c[0]);
    cv.previousElementSibling.textContent = title;
    plot(cv, h, [title, ...c.slice(1)], span);
  });
}

// ---- interaction ----------------------------------------------------------------------------------------------

function select(id) {
  sel = id === sel ? null : id;
  const h = hist.get(sel);
  if (h) h.picked = Date.now();
  render();
}

$('#peers thead').addEventListener('click', (e) => {
  const s = e.target.closest('th[data-s]')?.dataset.s;
  if (!s) return;
  if (s === sort) desc = !desc;
  else { sort = s; desc = s !== 'name' && s !== 'site_id'; }
  page = 0;
  renderHead();
  $(`th[data-s="${s}"]`).focus();
  if (polling) poll();
});
$('#peers tbody').addEventListener('click', (e) => {
  const id = e.target.closest('tr[data-site]')?.dataset.site;
  if (id != null) select(+id);
});
$('#peers').addEventListener('keydown', (e) => {
  if ((e.key === 'Enter' || e.key === ' ') && e.target.matches('th[data-s], tr[data-site]')) { e.preventDefault(); e.target.click(); }
});
$('#unsel').onclick = () => select(sel);
$('#q').oninput = (e) => { filter = e.target.value; render(); };
for (const [b, d] of [['#prev', -1], ['#next', 1]]) {
  $(b).onclick = () => {
    page = Math.min(Math.max(0, page + d), pages() - 1);
    if (polling) poll();
    render();
  };
}
addEventListener('resize', draw);

D.techCharts = () => ({ series: agg.t.length, selected: sel });

// Every site's latest pre-meeting link check (GET /api/link-checks), worst recommendation first; every 10 s.
const REC = ['audio_only', 'low', 'standard', 'full'];
let checks = [];
function renderChecks() {
  $('#checks thead tr').innerHTML = ['lc.site', 'lc.when', 'lc.down', 'lc.up', 'lc.loss', 'lc.rtt', 'lc.rec']
    .map((k) => `<th>${esc(t(k))}</th>`).join('');
  $('#lc-none').hidden = checks.length > 0;
  $('#checks tbody').innerHTML = checks.map((c) => {
    const r = c.result, kb = (v, sat) => (v == null ? '–' : (sat ? '' : '≥ ') + Math.round(v));
    const warnRow = r.recommended === 'audio_only' || r.recommended === 'low' ? ' class="warn"' : '';
    return `<tr data-site="${c.site_id}"${warnRow}><td class="l">${esc(c.site_name)}</td><td>${esc(clock(new Date(c.at_unix_ms)))}</td>`
      + `<td>${kb(r.down_kbps, r.down_saturated)}</td><td>${kb(r.up_kbps, r.up_saturated)}</td><td>${fmt(r.down_loss_pct)}</td>`
      + `<td>${r.rtt_ms == null ? '–' : Math.round(r.rtt_ms)}</td><td class="rec rec-${esc(r.recommended)}">${esc(t('prof.' + r.recommended))}</td></tr>`;
  }).join('');
}
async function pollChecks() {
  try {
    const r = await fetch(`/api/link-checks?token=${encodeURIComponent(token)}`, { cache: 'no-store' });
    if (r.ok) {
      checks = (await r.json()).checks || [];
      checks.sort((a, b) => REC.indexOf(a.result.recommended) - REC.indexOf(b.result.recommended) || a.site_id - b.site_id);
      D.linkChecks = checks;
      renderChecks();
    }
  } catch { /* shown again on the next round */ }
  setTimeout(pollChecks, 10000);
}
renderChecks();
pollChecks();

renderHead();
render();
start({
  page: 'technician',
  onWelcome() { if (!polling) { polling = true; poll(); } },
  onRoster: render,
  onLang() { renderHead(); render(); renderChecks(); },
});
