export interface BenchRow {
  /** e.g. "mutation throughput" */
  name: string;
  /** measured figure, e.g. 2150.3 */
  value: number;
  unit: string;            // "req/s", "ms", "GETs/prediction", ...
  baseline?: { name: string; value: number };  // measured side by side in the same run
  ratio?: number;          // value / baseline.value (or the inverse where noted in name)
  target?: string;         // human text, e.g. ">= 0.5"
  pass?: boolean;          // whether the target is met
  note?: string;
}

/** Three significant digits at most, but never scientific notation for the sizes we print. */
function fmt(n: number | undefined): string {
  if (n === undefined) return '';
  if (Number.isNaN(n)) return '-';
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function printTable(rows: BenchRow[]): void {
  const header = ['name', 'value', 'unit', 'baseline', 'ratio', 'target', 'pass', 'note'];
  const cells = rows.map((r) => [
    r.name,
    fmt(r.value),
    r.unit,
    r.baseline ? `${r.baseline.name} ${fmt(r.baseline.value)}` : '',
    r.ratio === undefined ? '' : fmt(r.ratio),
    r.target ?? '',
    r.pass === undefined ? '' : r.pass ? 'yes' : 'NO',
    r.note ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]?.length ?? 0)));
  // Numbers right-aligned so magnitudes line up; the last column is left ragged.
  const numeric = new Set([1, 4]);
  const line = (c: string[]) =>
    c
      .map((s, i) => (i === c.length - 1 ? s : numeric.has(i) ? s.padStart(widths[i] ?? 0) : s.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) console.log(line(c));
  const judged = rows.filter((r) => r.pass !== undefined);
  const met = judged.filter((r) => r.pass).length;
  console.log(`${met} targets met, ${judged.length - met} missed`);
}
