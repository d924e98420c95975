"""The command tree, for shell completion (generated: do not edit).

Written by ``scripts/gen-completions`` from every command's ``--help``
(``scripts/cli_surface.py``), so that completion never imports typer (responder.py).
"""
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

TREE: dict[str, dict[str, Any]] = {
    '': {
        'summary': 'Load models once, share them with every process, see what they cost, free them',
        'commands': {
            'ls': 'List the loaded models',
            'ps': 'Alias of ls',
            'load': 'Load a model (starting the daemon if none runs) and show its entry',
            'pull': "Download a registry model's weights into the Hugging Face cache (does not load it)",
            'eject': 'Eject a model (every variant unless narrowed) and hand its memory back',
            'stop': 'Alias of eject (as in ollama stop)',
            'unload': 'Alias of eject (as in lms unload)',
            'pin': 'Pin a loaded model: it is never evicted or expired, only ejected by hand',
            'unpin': 'Unpin a loaded model: eviction and keep-alive apply to it again',
            'embed': 'Embed texts and images (starting the daemon if none runs)',
            'models': 'List the model names modelctl knows (the registry)',
            'devices': 'Show memory, budgets and use of the cpu and each GPU',
            'top': 'Watch devices and models live until Ctrl-C',
            'serve': 'Run the daemon in the foreground (Ctrl-C stops it); --http adds a TCP listener',
            'daemon': 'Start, stop and inspect the background daemon',
            'completion': 'Shell completion for bash, zsh and fish',
            'cluster': "Run modelctl across hosts as a Ray Serve application (needs `pip install 'modelctl[ray]'` and a running Ray cluster)",
        },
        'arguments': [],
        'options': [
            [['--socket'], 'PATH', "The daemon's Unix socket (env MODELCTL_SOCKET)."],
            [['--url'], 'URL', 'Talk HTTP to a `modelctl serve --http` there instead (env MODELCTL_URL).'],
            [['--api-key'], 'KEY', 'API key for --url (env MODELCTL_API_KEY).'],
            [['--runtime-dir'], 'DIR', 'Where the daemon keeps its socket, lock and log (env MODELCTL_RUNTIME_DIR).'],
            [['--version'], None, 'Print the version and exit.'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'ls': {
        'summary': 'List the loaded models',
        'commands': {},
        'arguments': [],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'ps': {
        'summary': 'Alias of ls',
        'commands': {},
        'arguments': [],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'load': {
        'summary': 'Load a model (starting the daemon if none runs) and show its entry',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', "cpu, cuda or cuda:N [default: the daemon's (cuda when present, else cpu)]"],
            [['--pin'], None, 'Never evict or expire it; only `modelctl eject` removes it.'],
            [['--keep-alive'], 'DURATION', 'Eject the model after it has been idle this long (30s, 10m, 1h; -1: never).'],
            [['--properties'], 'JSON', "A custom model's modelProperties (Marqo's shape), as JSON or @file.json."],
            [['--precision'], 'PRECISION', "fp32, fp16 (cuda), bf16 or int8 (ONNX Runtime) [default: the daemon's, fp32]."],
            [['--engine'], 'ENGINE', "torch or onnx (text models on cpu) [default: the daemon's, torch; onnx for int8]."],
            [['--copies'], 'N', 'On a cluster: load it on N replicas (holders first, then the most free).  [1<=x<=64]'],
            [['--node'], 'NODE', 'On a cluster: only this node (its Ray node name or node id prefix).'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'pull': {
        'summary': "Download a registry model's weights into the Hugging Face cache (does not load it)",
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'eject': {
        'summary': 'Eject a model (every variant unless narrowed) and hand its memory back',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', 'Only the copy on this device [default: every device it is loaded on].'],
            [['--all'], None, 'Eject every model (on --device only, if given).'],
            [['--force'], None, 'Do not wait for requests in flight to finish.'],
            [['--precision'], 'PRECISION', 'Only the variant of this precision [default: every variant].'],
            [['--engine'], 'ENGINE', 'Only the variant on this engine [default: every variant].'],
            [['--node'], 'NODE', 'On a cluster: only this node (its Ray node name or node id prefix).'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'stop': {
        'summary': 'Alias of eject (as in ollama stop)',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', 'Only the copy on this device [default: every device it is loaded on].'],
            [['--all'], None, 'Eject every model (on --device only, if given).'],
            [['--force'], None, 'Do not wait for requests in flight to finish.'],
            [['--precision'], 'PRECISION', 'Only the variant of this precision [default: every variant].'],
            [['--engine'], 'ENGINE', 'Only the variant on this engine [default: every variant].'],
            [['--node'], 'NODE', 'On a cluster: only this node (its Ray node name or node id prefix).'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'unload': {
        'summary': 'Alias of eject (as in lms unload)',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', 'Only the copy on this device [default: every device it is loaded on].'],
            [['--all'], None, 'Eject every model (on --device only, if given).'],
            [['--force'], None, 'Do not wait for requests in flight to finish.'],
            [['--precision'], 'PRECISION', 'Only the variant of this precision [default: every variant].'],
            [['--engine'], 'ENGINE', 'Only the variant on this engine [default: every variant].'],
            [['--node'], 'NODE', 'On a cluster: only this node (its Ray node name or node id prefix).'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'pin': {
        'summary': 'Pin a loaded model: it is never evicted or expired, only ejected by hand',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', 'Only the copy on this device [default: every device it is loaded on].'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'unpin': {
        'summary': 'Unpin a loaded model: eviction and keep-alive apply to it again',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
        ],
        'options': [
            [['-d', '--device'], 'DEVICE', 'Only the copy on this device [default: every device it is loaded on].'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'embed': {
        'summary': 'Embed texts and images (starting the daemon if none runs)',
        'commands': {},
        'arguments': [
            ['NAME', False, []],
            ['TEXT', True, []],
        ],
        'options': [
            [['--image'], 'FILE', 'An image file to embed (CLIP models); repeatable.'],
            [['-d', '--device'], 'DEVICE', "cpu, cuda or cuda:N [default: the daemon's (cuda when present, else cpu)]"],
            [['--normalize', '--no-normalize'], None, 'Scale each embedding to unit length [default: yes, as Marqo].'],
            [['--query'], None, "Texts are search queries: put the model's query prefix before each (e5's `query: `, bge's instruction)."],
            [['--document'], None, "Texts are documents: put the model's document prefix before each (e5's `passage: `)."],
            [['-o', '--output'], 'FILE.npy', 'Write a float32 matrix (one row per input) instead of JSON lines.'],
            [['--batch-size'], 'N', 'Inputs per request.  [default: 64; 1<=x<=2048]'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'models': {
        'summary': 'List the model names modelctl knows (the registry)',
        'commands': {},
        'arguments': [],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'devices': {
        'summary': 'Show memory, budgets and use of the cpu and each GPU',
        'commands': {},
        'arguments': [],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'top': {
        'summary': 'Watch devices and models live until Ctrl-C',
        'commands': {},
        'arguments': [],
        'options': [
            [['--once'], None, 'Print one frame and exit.'],
            [['-n', '--interval'], 'SECONDS', 'Seconds between refreshes.  [default: 1.0; x>=0.1]'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'serve': {
        'summary': 'Run the daemon in the foreground (Ctrl-C stops it); --http adds a TCP listener',
        'commands': {},
        'arguments': [],
        'options': [
            [['--http'], 'PORT', 'Also listen for HTTP on this TCP port (the Marqo-compatible API; 0: any free port).  [0<=x<=65535]'],
            [['--host'], 'HOST', 'Address for --http [default: 127.0.0.1].'],
            [['--api-key'], 'KEY', 'Require this key (x-api-key or Bearer) on every TCP request.'],
            [['--max-cpu-memory'], 'SIZE', 'Budget for models on cpu (4GiB, 512MB).'],
            [['--max-cuda-memory'], 'SIZE', 'Budget for models on each GPU (8GiB).'],
            [['--keep-alive'], 'DURATION', 'Default idle time before a model is ejected (10m; -1: never) [default: never].'],
            [['--preload'], 'NAME', 'Load this model at start; repeatable.'],
            [['--precision'], 'PRECISION', 'Precision of loads that name none: fp32, fp16, bf16, int8 [default: fp32].'],
            [['--engine'], 'ENGINE', 'Engine of loads that name none: torch or onnx [default: torch].'],
            [['--threads'], 'N', 'cpu threads per forward pass [default: 0, the cores other processes leave free].  [0<=x<=1024]'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon': {
        'summary': 'Start, stop and inspect the background daemon',
        'commands': {
            'start': 'Start the daemon in the background (nothing happens if one runs)',
            'stop': 'Stop the daemon: in-flight requests finish (within MODELCTL_SHUTDOWN_GRACE, 30s unless set), every model is freed',
            'status': 'Show whether the daemon runs, and how (exit 3 when none runs)',
            'close-listener': "Close one of the daemon's HTTP listeners; the daemon and its models stay",
            'logs': "Show the end of the daemon's log file",
        },
        'arguments': [],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon start': {
        'summary': 'Start the daemon in the background (nothing happens if one runs)',
        'commands': {},
        'arguments': [],
        'options': [
            [['--http'], 'PORT', 'Also listen for HTTP on this TCP port (the Marqo-compatible API; 0: any free port).  [0<=x<=65535]'],
            [['--host'], 'HOST', 'Address for --http [default: 127.0.0.1].'],
            [['--api-key'], 'KEY', 'Require this key (x-api-key or Bearer) on every TCP request.'],
            [['--max-cpu-memory'], 'SIZE', 'Budget for models on cpu (4GiB, 512MB).'],
            [['--max-cuda-memory'], 'SIZE', 'Budget for models on each GPU (8GiB).'],
            [['--keep-alive'], 'DURATION', 'Default idle time before a model is ejected (10m; -1: never) [default: never].'],
            [['--precision'], 'PRECISION', 'Precision of loads that name none: fp32, fp16, bf16, int8 [default: fp32].'],
            [['--engine'], 'ENGINE', 'Engine of loads that name none: torch or onnx [default: torch].'],
            [['--threads'], 'N', 'cpu threads per forward pass [default: 0, the cores other processes leave free].  [0<=x<=1024]'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon stop': {
        'summary': 'Stop the daemon: in-flight requests finish (within MODELCTL_SHUTDOWN_GRACE, 30s unless set), every model is freed',
        'commands': {},
        'arguments': [],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon status': {
        'summary': 'Show whether the daemon runs, and how (exit 3 when none runs)',
        'commands': {},
        'arguments': [],
        'options': [
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon close-listener': {
        'summary': "Close one of the daemon's HTTP listeners; the daemon and its models stay",
        'commands': {},
        'arguments': [
            ['PORT', False, []],
        ],
        'options': [
            [['--host'], 'HOST', 'Only the listener on this address [default: any].'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'daemon logs': {
        'summary': "Show the end of the daemon's log file",
        'commands': {},
        'arguments': [],
        'options': [
            [['-n', '--lines'], 'N', 'Lines to show.  [default: 50; x>=0]'],
            [['-f', '--follow'], None, 'Keep printing new lines until Ctrl-C.'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'completion': {
        'summary': 'Shell completion for bash, zsh and fish',
        'commands': {
            'show': 'Print the completion script: save it, or `source <(modelctl completion show bash)`',
            'install': 'Install the completion script where the shell looks for it',
        },
        'arguments': [],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'completion show': {
        'summary': 'Print the completion script: save it, or `source <(modelctl completion show bash)`',
        'commands': {},
        'arguments': [
            ['SHELL', False, ['bash', 'zsh', 'fish']],
        ],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'completion install': {
        'summary': 'Install the completion script where the shell looks for it',
        'commands': {},
        'arguments': [
            ['SHELL', False, ['bash', 'zsh', 'fish']],
        ],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'cluster': {
        'summary': "Run modelctl across hosts as a Ray Serve application (needs `pip install 'modelctl[ray]'` and a running Ray cluster)",
        'commands': {
            'up': 'Deploy modelctl on a running Ray cluster and wait until every replica is ready',
            'status': "Show the application's state and every replica the fleet registry hears from",
            'down': 'Delete the modelctl application from the Ray cluster (Ray itself keeps running)',
            'config': 'Print the Serve config (YAML) for `serve deploy` or a KubeRay RayService',
        },
        'arguments': [],
        'options': [
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'cluster up': {
        'summary': 'Deploy modelctl on a running Ray cluster and wait until every replica is ready',
        'commands': {},
        'arguments': [],
        'options': [
            [['--address'], 'HOST:PORT', "The Ray cluster's address (`ray start --head` prints it) [default: RAY_ADDRESS, else the cluster started on this host]."],
            [['--http'], 'PORT', "Port of Serve's HTTP listener.  [default: 8882; 1<=x<=65535]"],
            [['--host'], 'HOST', "Address Serve's HTTP listener binds on every node. [default: 127.0.0.1]"],
            [['--proxy-location'], 'WHERE', 'Where Serve runs HTTP proxies: EveryNode (each node with replicas) or HeadOnly.  [default: EveryNode]'],
            [['--api-key'], 'KEY', 'Require this key (x-api-key or Bearer) on every TCP request.'],
            [['--gpus'], 'N', "GPUs to spread replicas over [default: the cluster's GPUs now].  [x>=0]"],
            [['--replicas-per-gpu'], 'N', 'Replicas sharing each GPU (each reserves 1/N of it). [default: 1; 1<=x<=16]'],
            [['--cpu-replicas'], 'N', 'Replicas that run models on cpu.  [default: 0; 0<=x<=256]'],
            [['--replica-cpus'], 'N', 'Ray CPUs each replica reserves.  [default: 1.0; x>=0.0]'],
            [['--max-cpu-memory'], 'SIZE', 'Budget for models on cpu (4GiB, 512MB).'],
            [['--max-cuda-memory'], 'SIZE', 'Budget for models on each GPU (8GiB).'],
            [['--keep-alive'], 'DURATION', 'Default idle time before a model is ejected (10m; -1: never) [default: never].'],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'cluster status': {
        'summary': "Show the application's state and every replica the fleet registry hears from",
        'commands': {},
        'arguments': [],
        'options': [
            [['--address'], 'HOST:PORT', "The Ray cluster's address (`ray start --head` prints it) [default: RAY_ADDRESS, else the cluster started on this host]."],
            [['--json'], None, 'Print JSON on stdout (only the JSON document; hints go to stderr, and an error is a JSON document there).'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'cluster down': {
        'summary': 'Delete the modelctl application from the Ray cluster (Ray itself keeps running)',
        'commands': {},
        'arguments': [],
        'options': [
            [['--address'], 'HOST:PORT', "The Ray cluster's address (`ray start --head` prints it) [default: RAY_ADDRESS, else the cluster started on this host]."],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
    'cluster config': {
        'summary': 'Print the Serve config (YAML) for `serve deploy` or a KubeRay RayService',
        'commands': {},
        'arguments': [],
        'options': [
            [['--address'], 'HOST:PORT', "The Ray cluster's address (`ray start --head` prints it) [default: RAY_ADDRESS, else the cluster started on this host]."],
            [['--http'], 'PORT', "Port of Serve's HTTP listener.  [default: 8882; 1<=x<=65535]"],
            [['--host'], 'HOST', "Address Serve's HTTP listener binds on every node. [default: 0.0.0.0]"],
            [['--proxy-location'], 'WHERE', 'Where Serve runs HTTP proxies: EveryNode (each node with replicas) or HeadOnly.  [default: EveryNode]'],
            [['--api-key'], 'KEY', 'Require this key (x-api-key or Bearer) on every TCP request.'],
            [['--gpus'], 'N', "GPUs to spread replicas over [default: the cluster's GPUs now].  [x>=0]"],
            [['--replicas-per-gpu'], 'N', 'Replicas sharing each GPU (each reserves 1/N of it). [default: 1; 1<=x<=16]'],
            [['--cpu-replicas'], 'N', 'Replicas that run models on cpu.  [default: 0; 0<=x<=256]'],
            [['--replica-cpus'], 'N', 'Ray CPUs each replica reserves.  [default: 1.0; x>=0.0]'],
            [['--max-cpu-memory'], 'SIZE', 'Budget for models on cpu (4GiB, 512MB).'],
            [['--max-cuda-memory'], 'SIZE', 'Budget for models on each GPU (8GiB).'],
            [['--keep-alive'], 'DURATION', 'Default idle time before a model is ejected (10m; -1: never) [default: never].'],
            [['-h', '--help'], None, 'Show this message and exit.'],
        ],
    },
}
