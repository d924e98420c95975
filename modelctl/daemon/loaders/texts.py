"""Fixed texts the variants are measured and calibrated on.

Two disjoint sets, each of varied, realistic text (questions, search queries, news,
product titles, reviews, code, log lines, other languages, short and long), never one
template repeated, since a variant's worst case shows on the odd ones:

- ``PROBE_TEXTS``: embedded in fp32 and in the variant at every load; the cosines are
  the entry's ``accuracy``.
- ``CALIBRATION_TEXTS``: what int8's activation ranges are measured on when its graph
  is built. Part of the int8 recipe: editing it changes the graph, so it changes the
  recipe's identity in the cache's manifest (``int8.identity``) and cached int8 graphs
  are rebuilt.

``bench/variants.py`` measures retrieval on a corpus of its own, disjoint from both.
"""

from __future__ import annotations

PROBE_TEXTS = (
    "A man is playing a guitar on stage.",
    "The quarterly report shows revenue grew by twelve percent.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "cheap flights to lisbon in march",
    "The cat sat quietly on the warm windowsill, watching the rain fall on the garden "
    "while the kettle began to whistle in the kitchen.",
    "def add(a, b): return a + b",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Error 503: service temporarily unavailable, retry after 30 seconds",
    "red running shoes size 42",
    "What is the capital of Australia?",
    "Interest rates were left unchanged as inflation eased toward the target.",
    "The mitochondria is the powerhouse of the cell.",
    "A quiet street at night, lit by a single lamp.",
    "Install the package, then run the tests before you open a pull request.",
    "Symptoms include fever, cough and fatigue lasting more than a week.",
    "ok",
    "Refund not received after 14 days, order #A-20391, please advise",
    "Stainless steel 12-cup programmable coffee maker with thermal carafe, black",
    "She finally understood why her grandmother had kept every letter, tied with string "
    "and stored in a biscuit tin under the stairs, for more than sixty years.",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 5;",
    "¿Dónde está la estación de tren más cercana?",
    "Le musée est fermé le mardi et les jours fériés.",
    "Battery drains overnight even in airplane mode — any fix?",
    "1 cup flour, 2 eggs, a pinch of salt; whisk until smooth and rest for an hour.",
    "The defendant's appeal was dismissed on procedural grounds.",
    "lol that was the best episode so far!!!",
    "Tokyo Stock Exchange closes higher as exporters rally on a weaker yen",
    "WARN 2024-03-02T11:04:55Z disk /dev/sda1 at 91% capacity",
    "Is it safe to take ibuprofen with coffee?",
    "Volcanic ash grounded hundreds of flights across northern Europe for a week in 2010.",
    "Thanks, that fixed it.",
)

CALIBRATION_TEXTS = (
    "The train to Manchester is delayed by about twenty minutes.",
    "Can I return an item without the original receipt?",
    "Scientists found traces of water ice in craters near the lunar south pole.",
    "wireless earbuds with noise cancellation under 100 dollars",
    "He opened the window and the smell of cut grass filled the room.",
    "The committee will publish its recommendations after the summer recess.",
    "for i in range(10): print(i * i)",
    "Wie spät ist es in New York?",
    "My laptop fan is loud whenever I join a video call.",
    "Add the onions and cook them slowly until they turn golden brown.",
    "Shares of the chipmaker fell six percent after it cut its sales forecast.",
    "The museum's new wing houses a collection of medieval tapestries.",
    "INFO request completed in 182 ms status=200 path=/api/v2/users",
    "Why do leaves change colour in autumn?",
    "a small wooden cabin by a frozen lake",
    "The striker scored twice in the second half to seal the title.",
    "Kindly confirm your shipping address so we can dispatch the replacement.",
    "Regular exercise lowers blood pressure and improves sleep quality.",
    "Le chat dort sur le canapé depuis ce matin.",
    "best budget mechanical keyboard 2023 review",
    "The bridge was closed for repairs after inspectors found cracks in two of its "
    "supporting columns, forcing commuters onto a lengthy detour through the old town.",
    "Tenants must give at least one month's written notice before moving out.",
    "The model overfits when the training set is small and the network is large.",
    "Where can I park near the stadium on match days?",
    "Heavy snow is expected in the mountains overnight, with drifting on exposed roads.",
    "TypeError: cannot concatenate 'str' and 'int' objects",
    "She plays the cello in a string quartet on weekends.",
    "organic green tea bags, 100 count",
    "The treaty ended decades of border disputes between the two countries.",
    "Please call me back when you get a chance.",
    "El concierto empieza a las ocho de la tarde.",
    "An octopus has three hearts and blue blood.",
    "Our flight was cancelled, and the airline offered only a voucher instead of a refund, "
    "which seems unfair given that the delay was entirely their fault.",
    "How many calories are in a banana?",
    "The new policy takes effect on the first of January.",
    "vintage leather armchair, minor scuffs, collection only",
    "Migrating birds use the Earth's magnetic field to navigate.",
    "git rebase -i HEAD~3",
    "The author's second novel is darker and more ambitious than her debut.",
    "Temperatures will reach 35 degrees by Thursday afternoon.",
    "I can't log in to my account after updating the app.",
    "The city council approved funding for three new cycle lanes.",
    "Roast the vegetables at 200°C for about forty minutes.",
    "Quantum computers exploit superposition to explore many states at once.",
    "great value, arrived quickly, would buy again",
    "The company plans to hire two hundred engineers next year.",
    "Was kostet ein Ticket nach Berlin?",
    "Children under twelve must be accompanied by an adult.",
    "The patient was prescribed antibiotics for a chest infection.",
    "Ancient Egyptians built the pyramids as tombs for their pharaohs.",
    "kubectl get pods --namespace=production",
    "A gentle breeze carried the sound of church bells across the valley.",
    "Inflation in the euro area slowed for the third month in a row.",
    "What time does the pharmacy open on Sundays?",
    "hiking boots waterproof women size 7",
    "The orchestra rehearsed the symphony for weeks before the premiere.",
    "Your subscription will renew automatically unless you cancel it.",
    "The referee showed a red card after a dangerous tackle in the 70th minute.",
    "Bees communicate the location of flowers through a waggle dance.",
    "Sorry, I meant next Tuesday, not this one.",
    "Good morning!",
    "The startup raised 40 million dollars in a funding round led by a venture firm.",
    "Ensure the power cable is disconnected before opening the case.",
    "Il pleut depuis trois jours sans arrêt.",
    "unsubscribe",
    "The lighthouse keeper wrote in his log every evening for thirty years.",
)
