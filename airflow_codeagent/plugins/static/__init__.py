"""Browser assets of the trace view (trace.js, trace.css, icon.svg), served by the plugin app."""
