"""The contracts every part shares: settings, intervals, symbols, the tick message and its
rules, the feature set, the prediction. Pure Python; nothing here opens a file or a socket."""
