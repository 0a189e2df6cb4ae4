"""The labelled set for the semantic cache, scored with the packaged model.

- ``PARAPHRASES``: the same question reworded; must hit at the default
  threshold.
- ``LOOSE_PARAPHRASES``: the same question with more rewording ("How fast
  does light travel?"); the model scores them 0.83-0.92, below the default
  threshold, so they miss (and "3 tips" / "three tips", whose numbers
  differ): that is the price of never serving the answer of a different
  question, and the tests count them so a change is seen.
- ``DIFFERENT``: a different question, most of them one word apart, which
  is where an embedding cache goes wrong; must miss.  Without the number
  and negation guard (``ingress/cache/semantic/guard.py``) "with" /
  "without recursion" scores 0.98 and "555-1234" / "555-9876" 0.96; of
  the rest the closest scores 0.89 ("read" vs "write a CSV file").

Known limit, not in the set: a reversed direction with the same words ("to
the airport from downtown" / "to downtown from the airport", 0.99) is a
paraphrase to this model; nothing here tells it apart."""

PARAPHRASES: list[tuple[str, str]] = [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("Explain photosynthesis", "Explain photosynthesis please"),
    ("What is the boiling point of water at sea level?", "At sea level, what is the boiling point of water?"),
    ("Give me a recipe for chocolate chip cookies", "Can you give me a chocolate chip cookie recipe?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("What does HTTP status code 404 mean?", "What is the meaning of the HTTP 404 status code?"),
    ("How do I undo the last git commit?", "How can I undo my last commit in git?"),
    ("Summarize the plot of Hamlet", "Give me a summary of the plot of Hamlet"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("Write a SQL query to count rows in a table", "Write an SQL query that counts the rows of a table"),
    ("What is the tallest mountain in the world?", "Which mountain is the tallest in the world?"),
    ("Explain the difference between TCP and UDP", "What is the difference between TCP and UDP?"),
    ("Recommend a good book about habits", "Can you recommend a good book on habits?"),
    ("How do I install numpy?", "How can I install numpy?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("What is the capital of Italy?", "What's the capital of Italy?"),
    ("How do I create a virtual environment in Python?", "How can I create a Python virtual environment?"),
    ("What is the largest ocean on Earth?", "Which ocean is the largest on Earth?"),
    ("How do I merge two dictionaries in Python?", "How can I merge two Python dictionaries?"),
    ("What is the chemical symbol for gold?", "What's the chemical symbol of gold?"),
    ("Who painted the Mona Lisa?", "Who was the painter of the Mona Lisa?"),
    (
        "How do I list all files in a directory with bash?",
        "How can I list every file in a directory using bash?",
    ),
    ("What is the square root of 144?", "What's the square root of 144?"),
    ("How do I check my Python version?", "How can I check which Python version I have?"),
    ("Explain recursion with an example", "Explain recursion using an example"),
    ("What are the benefits of regular exercise?", "What are the benefits of exercising regularly?"),
    ("How do I kill a process in Linux?", "How can I kill a process on Linux?"),
    ("What time zone is Tokyo in?", "Which time zone is Tokyo in?"),
    ("Please explain what a hash table is", "Explain what a hash table is"),
    ("How do I declare a constant in JavaScript?", "How can I declare a constant in JavaScript?"),
    ("What is 15% of 200?", "What's 15% of 200?"),
    ("Convert 5 miles to km", "Convert 5 miles into km"),
    (
        "Write a function that sorts a list without recursion",
        "Write a function which sorts a list without using recursion",
    ),
    ("Why doesn't my Python script print anything?", "Why does my Python script not print anything?"),
    ("What year did World War 2 start?", "In what year did World War 2 start?"),
]

LOOSE_PARAPHRASES: list[tuple[str, str]] = [
    ("What is the speed of light?", "How fast does light travel?"),
    ("What is the population of Japan?", "How many people live in Japan?"),
    ("How do I read a CSV file with pandas?", "How can I load a CSV file using pandas?"),
    ("How do I make a cup of green tea?", "How should I prepare a cup of green tea?"),
    ("How do I delete a file in Linux?", "How can I remove a file on Linux?"),
    (
        "How do I convert a string to an integer in Python?",
        "How can I convert a string into an int in Python?",
    ),
    ("Translate 'good morning' into Spanish", "How do you say 'good morning' in Spanish?"),
    ("What is machine learning?", "Can you explain what machine learning is?"),
    ("What are the symptoms of the flu?", "What symptoms does the flu cause?"),
    ("Give me 3 tips for better sleep", "Give me three tips for better sleep"),
]

DIFFERENT: list[tuple[str, str]] = [
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ("Write a haiku about autumn", "Write a haiku about spring"),
    (
        "How do I convert a string to an integer in Python?",
        "How do I convert an integer to a string in Java?",
    ),
    ("What is the boiling point of water at sea level?", "What is the freezing point of water at sea level?"),
    ("Give me a recipe for chocolate chip cookies", "Give me a recipe for banana bread"),
    ("How many legs does a spider have?", "How many legs does an ant have?"),
    ("Who wrote Pride and Prejudice?", "Who wrote War and Peace?"),
    ("Translate 'good morning' into Spanish", "Translate 'good morning' into German"),
    ("What does HTTP status code 404 mean?", "What does HTTP status code 500 mean?"),
    ("How do I undo the last git commit?", "How do I push my commits to GitHub?"),
    ("Summarize the plot of Hamlet", "Summarize the plot of Macbeth"),
    ("What are the symptoms of the flu?", "How is the flu treated?"),
    ("How do I center a div in CSS?", "How do I make a div scrollable in CSS?"),
    ("Write a SQL query to count rows in a table", "Write a SQL query to delete all rows in a table"),
    ("What is the speed of light?", "What is the speed of sound?"),
    ("How do I make a cup of green tea?", "How do I make a cup of coffee?"),
    ("What is machine learning?", "What is quantum computing?"),
    ("How do I delete a file in Linux?", "How do I create a file in Linux?"),
    ("What is the tallest mountain in the world?", "What is the longest river in the world?"),
    ("Explain the difference between TCP and UDP", "Explain the difference between HTTP and HTTPS"),
    ("How do I read a CSV file with pandas?", "How do I write a CSV file with pandas?"),
    ("What is the population of Japan?", "What is the population of Brazil?"),
    ("Recommend a good book about habits", "Recommend a good movie about space"),
    ("How do I install numpy?", "How do I uninstall numpy?"),
    ("What is the capital of Italy?", "What is the capital of Spain?"),
    ("How do I create a virtual environment in Python?", "How do I delete a virtual environment in Python?"),
    ("What is the largest ocean on Earth?", "What is the smallest ocean on Earth?"),
    ("How do I merge two dictionaries in Python?", "How do I merge two lists in Python?"),
    ("What is the chemical symbol for gold?", "What is the chemical symbol for silver?"),
    ("Who painted the Mona Lisa?", "Who painted The Starry Night?"),
    (
        "How do I list all files in a directory with bash?",
        "How do I count all files in a directory with bash?",
    ),
    ("What is the square root of 144?", "What is the square root of 169?"),
    ("How do I kill a process in Linux?", "How do I start a process in the background in Linux?"),
    ("How do I declare a constant in JavaScript?", "How do I declare a constant in Rust?"),
    (
        "Write a function that sorts a list without recursion",
        "Write a function that sorts a list with recursion",
    ),
    ("What is 2+2?", "What is 2+3?"),
    ("Convert 5 miles to km", "Convert 6 miles to km"),
    ("What year did World War 2 start?", "What year did World War 1 start?"),
    ("Write a poem about love in 4 lines", "Write a poem about love in 8 lines"),
    ("Remind me to call 555-1234", "Remind me to call 555-9876"),
]
