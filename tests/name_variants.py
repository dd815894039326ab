"""A labelled set of printed name variants against the sample world's directory (seed 7).

Each case: (printed name, printed employee id or None, who it really is as (first, last) or an LLC
name, or None when the right answer is "send to review").
"""

from __future__ import annotations

Who = tuple[str, str] | str | None

CASES: list[tuple[str, str | None, Who]] = [
    # Reordered "LAST, FIRST M", as registers print them
    ("MCCOY, KEVIN", None, ("Kevin", "McCoy")),
    ("MCCUE, KEVIN", None, ("Kevin", "McCue")),
    ("SMYTH, ALVARO J", None, ("Alvaro", "Smyth")),
    ("SMITH, ALVARO", None, ("Alvaro", "Smith")),
    ("NGUYEN, JON", None, ("Jon", "Nguyen")),
    ("NGUYEN, JOHN", None, ("John", "Nguyen")),
    ("LEE, ANNE MARIE", None, ("Anne", "Lee")),
    ("LI, ANN", None, ("Ann", "Li")),
    ("JOHNSON, CATHERINE", None, ("Catherine", "Johnson")),
    ("JOHNSTON, KATHRYN", None, ("Kathryn", "Johnston")),
    ("O'BRIEN, JEFFREY", None, ("Jeffrey", "O'Brien")),
    ("HADDAD, MICHAEL G", None, ("Michael", "Haddad")),
    ("YOUNG, TIMOTHY O", None, ("Timothy", "Young")),
    ("THOMAS, ANTHONY W", None, ("Anthony", "Thomas")),
    ("SCOTT, ROBERT G", None, ("Robert", "Scott")),
    # Natural order, middle initials with and without dots
    ("Kevin McCoy", None, ("Kevin", "McCoy")),
    ("Kevin McCue", None, ("Kevin", "McCue")),
    ("Michael G. Haddad", None, ("Michael", "Haddad")),
    ("Robert G Scott", None, ("Robert", "Scott")),
    ("Timothy O. Young", None, ("Timothy", "Young")),
    ("Anthony W. Thomas", None, ("Anthony", "Thomas")),
    ("Gregory Okafor", None, ("Gregory", "Okafor")),
    ("Susan Roberts", None, ("Susan", "Roberts")),
    # Nicknames and preferred names
    ("Bob Scott", None, ("Robert", "Scott")),
    ("Jeff O'Brien", None, ("Jeffrey", "O'Brien")),
    ("Greg Okafor", None, ("Gregory", "Okafor")),
    ("Mike Haddad", None, ("Michael", "Haddad")),
    ("Steve Müller", None, ("Steven", "Müller")),
    ("Tim Young", None, ("Timothy", "Young")),
    ("Sue Roberts", None, ("Susan", "Roberts")),
    ("Tony Thomas", None, ("Anthony", "Thomas")),
    ("Steph Green", None, ("Stephanie", "Green")),
    ("Jen Brontë", None, ("Jennifer", "Brontë")),
    ("Dick Rivera", None, ("Richard", "Rivera")),
    ("Rick Lopez", None, ("Richard", "Lopez")),
    ("Kathy Johnston", None, ("Kathryn", "Johnston")),
    # Diacritics lost or added
    ("Steven Muller", None, ("Steven", "Müller")),
    ("MULLER, STEVEN", None, ("Steven", "Müller")),
    ("Melissa O Ceallaigh", None, ("Melissa", "Ó Ceallaigh")),
    ("O CEALLAIGH, MELISSA U", None, ("Melissa", "Ó Ceallaigh")),
    ("Jennifer Bronte", None, ("Jennifer", "Brontë")),
    ("Nuno Martin", None, ("Nuño", "Martin")),
    ("Ines Van der Berg", None, ("Inés", "Van der Berg")),
    ("Zoe Hill", None, ("Zoë", "Hill")),
    ("Yuki Nunez", None, ("Yuki", "Núñez")),
    # Typos
    ("Michael Hadad", None, ("Michael", "Haddad")),
    ("Gregroy Okafor", None, ("Gregory", "Okafor")),
    ("Stephanie Gren", None, ("Stephanie", "Green")),
    ("Kevin McCoi", None, ("Kevin", "McCoy")),
    # Employee ids printed beside the name
    ("MCCOY, KEVIN", "10001", ("Kevin", "McCoy")),
    ("Bob Scott", "10049", ("Robert", "Scott")),
    ("KEVIN MCCUE", "10001", None),  # the id belongs to McCoy: a contradiction goes to review
    # LLCs and contractors: only through the mapping
    ("KR Consulting LLC", None, "KR Consulting LLC"),
    ("NM Studio LLC", None, "NM Studio LLC"),
    ("NM STUDIO, LLC", None, "NM Studio LLC"),
    ("Contractor - TK Partners LLC", None, "TK Partners LLC"),
    ("AL Advisory L.L.C.", None, "AL Advisory LLC"),
    ("Acme Staffing LLC", None, None),  # unknown company: never matched to a person
    ("Kevin McCoy Consulting LLC", None, None),  # looks like a person's name, still a company
    ("JD Consulting LLC", None, None),
    # Near-namesakes and ambiguity: review, never a guess
    ("Smith", None, None),
    ("NGUYEN", None, None),
    ("Jonh Nguyen", None, None),
    ("K. McCoy-McCue", None, None),
    ("Kevin Mc", None, None),
    ("Alvaro Smithe", None, None),
    # People who are not in the directory at all
    ("Kevin McCarthy", None, None),
    ("Maria Lopez", None, None),
    ("Priya Natarajan", None, None),
    ("Chen Wei", None, None),
    ("Johnathan Smyth", None, None),
]
