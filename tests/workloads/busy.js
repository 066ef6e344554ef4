// A busy JavaScript function for `node --perf-basic-prof`: the profiler must name it.
const seconds = Number(process.argv[2] || 5);
function busyJavaScriptLoop(n) {
  let acc = 0;
  for (let i = 0; i < n; i++) acc = (acc + i * i) % 1000003;
  return acc;
}
const end = Date.now() + seconds * 1000;
let total = 0;
while (Date.now() < end) total += busyJavaScriptLoop(200000);
console.log(total);
