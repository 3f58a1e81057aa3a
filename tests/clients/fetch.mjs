// Node.js's built-in fetch, as an agent would use it: GET each URL, print one line per URL
// (the status, or "error CODE"). It is given no proxy: only what `intentgate run` sets.
for (const url of process.argv.slice(2)) {
  try {
    const r = await fetch(url);
    await r.arrayBuffer();
    console.log(String(r.status));
  } catch (e) {
    console.log("error " + (e.cause?.code || e.cause?.message || e.message));
  }
}
