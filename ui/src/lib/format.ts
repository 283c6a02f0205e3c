// Formatting helpers.
export function short(id: string | undefined | null, n = 10): string {
  if (!id) return "";
  const cut = id.indexOf("_");
  return cut >= 0 ? id.slice(0, cut + 1) + id.slice(-n + cut + 1 > 0 ? -6 : -6) : id.slice(0, n) + "…";
}
export function time(s: string | undefined): string {
  if (!s) return "";
  const d = new Date(s.replace(/\.(\d{3})\d*Z$/, ".$1Z"));
  return isNaN(d.getTime()) ? s : d.toLocaleTimeString();
}
export function bytes(n: number | null | undefined): string {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
export function json(v: unknown): string {
  return JSON.stringify(v, null, 2);
}
