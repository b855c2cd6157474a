// tech.js — the technician page: no media; the WebSocket gives welcome + roster, and the per-peer statistics
// come from GET /api/meetings/{id}/stats every second, shown as a sortable table (worst loss first).
import { start, $, D, esc, token } from './app.js';
import { t, getLang } from './i18n.js';

// [key in the row ('c.' = client report), header label, numeric]
const COLS = [
  ['name', 'col.name'], ['role', 'col.role'], ['state', 'col.state'],
  ['kbps_in', 'col.kin', 1], ['kbps_out', 'col.kout', 1], ['loss_pct', 'col.loss', 1], ['rtt_ms', 'col.rtt', 1],
  ['c.frames_decoded', 'col.frames', 1], ['c.audio_samples', 'col.samples', 1], ['c.packets_lost', 'col.lost', 1],
  ['c.rtt_ms', 'col.crtt', 1], ['c.kbps_in', 'col.ckin', 1],
];
let sortKey = 'loss_pct', dir = -1; // worst (highest loss) first
let data = null, polling = false, okAt = null;

const val = (p, k) => (k.startsWith('c.') ? p.client?.[k.slice(2)] : p[k]) ?? null;
const fmt = (v) => (v == null ? '–' : typeof v === 'number' ? (Number.isInteger(v) ? v.toLocaleString('en').replace(/,/g, ' ') : v.toFixed(1)) : v);
const label = (k, v) => (v == null ? '–' : k === 'role' ? t('role.' + v) : k === 'state' ? t('ps.' + v) : fmt(v));

function renderHead() {
  $('#cols').innerHTML = COLS.map(([k, l]) => {
    const s = k === sortKey ? (dir < 0 ? 'descending' : 'ascending') : 'none';
    return `<th data-k="${k}" aria-sort="${s}" tabindex="0">${t(l)}${s === 'none' ? '' : dir < 0 ? ' ▾' : ' ▴'}</th>`;
  }).join('');
}

function render() {
  renderHead();
  const peers = [...(data?.peers || [])];
  const num = COLS.find((c) => c[0] === sortKey)?.[2];
  // Sort by the chosen column; missing values always last; ties by name.
  peers.sort((a, b) => {
    const x = val(a, sortKey), y = val(b, sortKey);
    if (x == null || y == null) return (x == null) - (y == null);
    const c = num ? x - y : String(x).localeCompare(String(y), 'vi');
    return c * dir || String(a.name).localeCompare(String(b.name), 'vi');
  });
  $('#peers tbody').innerHTML = peers.map((p) => {
    const bad = (k, v) => v != null && ((k.endsWith('loss_pct') && v > 5) || (k.endsWith('rtt_ms') && v > 400));
    return `<tr class="ps-${esc(p.state)}" data-site="${p.site_id}">` + COLS.map(([k]) => {
      const v = val(p, k);
      return `<td class="${bad(k, v) ? 'bad' : ''}">${esc(label(k, v))}</td>`;
    }).join('') + '</tr>';
  }).join('');
  const b = data?.bridge;
  $('#bridge').textContent = b ? t('tech.bridge', { p: fmt(data.peers?.length), s: fmt(b.shards) }) : '';
  $('#updated').textContent = okAt ? t('tech.updated', { t: okAt.toLocaleTimeString(getLang() === 'vi' ? 'vi-VN' : 'en-GB') }) : '';
  // Sites of the roster that are not connected, by name.
  const chair = D.welcome?.chair_site_id;
  const inv = D.roster.filter((s) => s.site_id !== chair);
  const off = inv.filter((s) => s.state !== 'connected');
  $('#counts').textContent = inv.length ? t('chair.count', { c: inv.length - off.length, n: inv.length }) : '';
  $('#offline').textContent = off.length ? `${t('tech.offline', { n: off.length })} ${off.map((s) => s.name).join(', ')}` : '';
}

async function poll() {
  const id = D.welcome?.meeting_id;
  const err = $('#fetcherr');
  try {
    const r = await fetch(`/api/meetings/${encodeURIComponent(id)}/stats?token=${encodeURIComponent(token)}`, { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    data = D.stats = await r.json();
    okAt = new Date();
    err.hidden = true;
  } catch (e) {
    D.lastError = t('tech.fail', { msg: e.message });
    err.textContent = D.lastError;
    err.hidden = false;
  }
  render();
  setTimeout(poll, 1000);
}

$('#peers thead').addEventListener('click', (e) => {
  const k = e.target.closest('th[data-k]')?.dataset.k;
  if (!k) return;
  if (k === sortKey) dir = -dir;
  else { sortKey = k; dir = COLS.find((c) => c[0] === k)[2] ? -1 : 1; }
  render();
});
$('#peers thead').addEventListener('keydown', (e) => { if (e.key === 'Enter') e.target.click(); });

render();
start({
  page: 'technician',
  onWelcome() { if (!polling) { polling = true; poll(); } },
  onRoster: render,
  onLang: render,
});
