/**
 * A chain of upcalls, each handler sending the next event (a frontend issuing its next request from the
 * previous completion), runs inside one delivery for as long as it lasts: the queue of domains to deliver
 * must stay as short as the chain is wide, not grow by every upcall.
 */
import { expect, it } from "vitest";
import { XenHost } from "../../src/hypervisor/index.ts";

const tick = () => new Promise<void>((r) => setImmediate(r));

it("a long ping-pong chain in one delivery keeps the run queue bounded and loses no event", async () => {
  const host = new XenHost({ ramSize: 16 * 1024 * 1024 });
  const ev = host.evtchn;
  const fePort = ev.allocUnbound(1, 0);
  const bePort = ev.bindInterdomain(0, 1, fePort);
  await tick(); // the bind's pending event
  const queue = (ev as unknown as { runQueue: unknown[] }).runQueue;
  const N = 20_000;
  let back = 0;
  let front = 0;
  let longest = 0;
  ev.bindHandler(0, bePort, () => {
    back++;
    ev.send(0, bePort); // the backend answers
  });
  ev.bindHandler(1, fePort, () => {
    front++;
    longest = Math.max(longest, queue.length);
    if (front < N) ev.send(1, fePort); // the frontend's next request, from its completion
  });
  ev.send(1, fePort);
  await tick();
  expect(back).toBe(N);
  expect(front).toBe(N);
  expect(longest).toBeLessThanOrEqual(2);
  expect(queue.length).toBe(0);
});
