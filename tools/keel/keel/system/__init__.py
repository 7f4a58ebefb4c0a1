"""The system drawn from its contracts: which services exist, what they serve, whom they call,
which events they publish and subscribe to (`keel graph`), and which of them a change touches
(`keel affected`). Everything comes from what Keel already knows: the protos, each service
package's `[tool.keel] serves`, and the generated clients its code uses."""
