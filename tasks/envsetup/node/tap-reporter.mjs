// envfarm's reporter for Node's own test runner (node --test --test-reporter=FILE): TAP whose test
// names carry the test file and the enclosing tests, `ok N - test/a.test.js > suite > case`, so ids are
// unique across files on every Node major (the built-in TAP reporter names a test by its title alone).
// Results arrive children first (a test reports after its subtests), each with its nesting level.
import path from 'node:path';

function clean(name) {
  return String(name).replace(/[\r\n]+/g, ' ').replace(/\\/g, '\\\\').replace(/#/g, '\\#');
}

export default async function* tapWithPaths(source) {
  const pending = new Map(); // nesting level -> [{path, status}] reported but whose parent has not
  const root = process.cwd() + path.sep;
  let count = 0;
  const totals = { tests: 0, pass: 0, fail: 0, skipped: 0, todo: 0 };
  yield 'TAP version 13\n';
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const data = event.data;
    const level = data.nesting || 0;
    const children = pending.get(level + 1) || [];
    pending.delete(level + 1);
    const isSuite = data.details && data.details.type === 'suite';
    let status = event.type === 'test:pass' ? 'ok' : 'not ok';
    let directive = data.skip !== undefined && data.skip !== false ? ' # SKIP' : (data.todo !== undefined && data.todo !== false ? ' # TODO' : '');
    let entries;
    if (children.length) {
      entries = children.map((c) => ({ path: [data.name, ...c.path], status: c.status, directive: c.directive }));
    } else if (isSuite) {
      entries = [];
    } else if (level === 0 && data.file && data.name === data.file) {
      entries = [{ path: [], status, directive }]; // the file itself failed (it did not load): its path alone
    } else {
      entries = [{ path: [data.name], status, directive }];
    }
    if (level > 0) {
      const list = pending.get(level) || [];
      list.push(...entries);
      pending.set(level, list);
      continue;
    }
    let file = data.file ? String(data.file) : '';
    if (file.startsWith(root)) file = file.slice(root.length);
    for (const entry of entries) {
      count += 1;
      totals.tests += 1;
      if (entry.directive === ' # SKIP') totals.skipped += 1;
      else if (entry.directive === ' # TODO') totals.todo += 1;
      else if (entry.status === 'ok') totals.pass += 1;
      else totals.fail += 1;
      const name = [file, ...entry.path].filter((p) => p !== '').map(clean).join(' > ');
      yield `${entry.status} ${count} - ${name}${entry.directive}\n`;
    }
  }
  yield `1..${count}\n`;
  for (const [key, value] of Object.entries(totals)) yield `# ${key} ${value}\n`;
}
