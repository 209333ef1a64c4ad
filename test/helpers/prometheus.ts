/**
 * A strict parser of the Prometheus text exposition format (0.0.4), for tests. prom-client ships
 * no parser, and the npm one tried (parse-prometheus-text-format) returns [] for garbage and drops
 * the labels of histogram samples, so it could not fail a broken /metrics. This one throws on any
 * line that is not a HELP, TYPE, comment or well-formed sample of a family declared before it.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const META = new RegExp(`^# (HELP|TYPE) (${NAME})(?: (.*))?$`);
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
const LABEL = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"\s*(?:,|$)/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
/** Sample-name suffixes each type allows beside the family's own name. */
const SUFFIXES: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const fail = (n: number, line: string, why: string): never => {
    throw new Error(`line ${n + 1} of the exposition: ${why}: ${JSON.stringify(line)}`);
  };
  text.split('\n').forEach((line, n) => {
    if (line === '') return;
    if (line.startsWith('#')) {
      const meta = META.exec(line);
      if (!meta) return; // a plain comment
      const [, kind, name = '', rest = ''] = meta;
      const family = families.get(name) ?? { type: 'untyped', help: '', samples: [] };
      families.set(name, family);
      if (kind === 'HELP') family.help = rest;
      else if (TYPES.has(rest)) family.type = rest;
      else fail(n, line, 'unknown metric type');
      return;
    }
    const m = SAMPLE.exec(line) ?? fail(n, line, 'not a sample line');
    const [, name = '', labelText = '', rawValue = ''] = m;
    // As Prometheus reads them (Go's ParseFloat): NaN and Inf in any case, with an optional sign.
    const special = /^([+-]?)(inf|infinity|nan)$/i.exec(rawValue);
    const value = special ? (special[2]?.toLowerCase() === 'nan' ? Number.NaN : special[1] === '-' ? -Infinity : Infinity) : Number(rawValue);
    if (!special && (rawValue.trim() === '' || Number.isNaN(value))) fail(n, line, 'not a number');
    const labels: Record<string, string> = {};
    let rest = labelText;
    while (rest.trim()) {
      const l = LABEL.exec(rest) ?? fail(n, line, 'malformed labels');
      labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(l[0].length);
    }
    const owner = [...families.entries()].find(([f, fam]) => name === f || (SUFFIXES[fam.type] ?? []).some((s) => name === f + s));
    if (!owner) fail(n, line, 'a sample of no declared family');
    owner?.[1].samples.push({ name, labels, value });
  });
  return families;
}

function matching(families: Map<string, Family>, name: string, labels: Record<string, string>): Sample[] {
  return [...families.values()]
    .flatMap((f) => f.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample named `name` whose labels include `labels`; throws unless exactly one matches. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const matches = matching(families, name, labels);
  if (matches.length !== 1 || !matches[0]) throw new Error(`${matches.length} samples of ${name} ${JSON.stringify(labels)}`);
  return matches[0].value;
}

/** Like sampleValue, but 0 when no such sample exists yet (a labelled counter never incremented). */
export function sampleValueOr0(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  return matching(families, name, labels).length === 0 ? 0 : sampleValue(families, name, labels);
}
