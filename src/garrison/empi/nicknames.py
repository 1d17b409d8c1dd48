"""English given-name nicknames, so that "Bill" can match "William" and "Liz" can match "Elizabeth".

A small hand-written table of common US forms (no external list is downloaded). A nickname may
belong to several formal names ("Chris": Christopher, Christina, Christian), so a name maps to a
*set* of formal names; two first names are nickname-equivalent when their sets intersect.
`name_group` goes one step coarser for blocking: the formal names joined through any shared
nickname form one group, so every nickname-equivalent pair shares a blocking key.
"""

from __future__ import annotations

from functools import cache

# formal name -> its usual short forms and variant spellings
_NICKNAMES: dict[str, tuple[str, ...]] = {
    "abigail": ("abby", "abbie", "gail"),
    "albert": ("al", "bert", "albie"),
    "alexander": ("alex", "al", "xander", "sasha", "lex"),
    "alexandra": ("alex", "lexi", "lexie", "sasha", "sandra", "ally"),
    "alexis": ("lexi", "lexie", "alex"),
    "alfred": ("al", "alf", "fred"),
    "allison": ("ally", "allie", "alison"),
    "amanda": ("mandy", "manda"),
    "andrea": ("andi", "andie"),
    "andrew": ("andy", "drew"),
    "angela": ("angie",),
    "anthony": ("tony", "ant"),
    "barbara": ("barb", "barbie", "babs"),
    "benjamin": ("ben", "benny", "benji"),
    "bradley": ("brad",),
    "cameron": ("cam",),
    "catherine": ("cathy", "kate", "katie", "cat", "kathy", "katherine", "kathryn"),
    "charles": ("charlie", "chuck", "chas", "chaz"),
    "christian": ("chris",),
    "christina": ("chris", "tina", "chrissy", "christine", "kristina", "kristin"),
    "christopher": ("chris", "topher", "kit", "cris"),
    "cynthia": ("cindy",),
    "daniel": ("dan", "danny"),
    "danielle": ("dani", "dany"),
    "david": ("dave", "davey", "davy"),
    "deborah": ("debbie", "deb", "debra"),
    "dominic": ("dom",),
    "donald": ("don", "donny", "donnie"),
    "dorothy": ("dot", "dottie", "dolly"),
    "douglas": ("doug",),
    "edward": ("ed", "eddie", "ted", "ned", "teddy"),
    "eleanor": ("ellie", "nora", "elle", "elena"),
    "elijah": ("eli",),
    "elizabeth": ("liz", "beth", "betty", "lizzie", "eliza", "libby", "betsy", "liza", "elisabeth"),
    "emily": ("em", "emmy", "emmie"),
    "eugene": ("gene",),
    "evelyn": ("evie", "eve"),
    "ezekiel": ("zeke",),
    "francis": ("frank", "fran", "frankie"),
    "franklin": ("frank", "frankie"),
    "frederick": ("fred", "freddie", "freddy", "rick"),
    "gabriel": ("gabe",),
    "gabriella": ("gabby", "gabi", "ella", "gabrielle"),
    "gerald": ("jerry", "gerry"),
    "gregory": ("greg",),
    "harold": ("hal", "harry"),
    "henry": ("hank", "harry", "hal"),
    "isaac": ("ike", "zac"),
    "isabella": ("bella", "izzy", "isabel", "isabelle"),
    "jacob": ("jake", "jay"),
    "jacqueline": ("jackie", "jacqui"),
    "james": ("jim", "jimmy", "jamie", "jem"),
    "jeffrey": ("jeff", "geoffrey"),
    "jennifer": ("jen", "jenny", "jenn"),
    "jeremiah": ("jerry", "jeremy"),
    "jessica": ("jess", "jessie"),
    "john": ("jack", "johnny", "jon", "jonny"),
    "jonathan": ("jon", "jonny", "johnny", "nathan"),
    "joseph": ("joe", "joey", "jos"),
    "joshua": ("josh",),
    "judith": ("judy", "jude"),
    "katherine": ("kate", "katie", "kathy", "kat", "kathryn", "kay", "kitty"),
    "kathleen": ("kathy", "kate", "katie", "kath"),
    "kenneth": ("ken", "kenny"),
    "kimberly": ("kim", "kimmy"),
    "lawrence": ("larry", "laurence", "lars"),
    "leonard": ("leo", "len", "lenny"),
    "louis": ("lou", "louie"),
    "madeline": ("maddie", "maddy", "madeleine"),
    "madison": ("maddie", "maddy"),
    "margaret": ("maggie", "meg", "peggy", "marge", "margie", "greta"),
    "matthew": ("matt", "matty"),
    "maxwell": ("max",),
    "melissa": ("missy", "mel", "lissa"),
    "michael": ("mike", "mikey", "mick", "mickey", "mitch"),
    "mitchell": ("mitch",),
    "natalie": ("nat", "nattie", "talia"),
    "nathan": ("nate", "nat"),
    "nathaniel": ("nate", "nathan", "nat"),
    "nicholas": ("nick", "nicky", "nico"),
    "oliver": ("ollie",),
    "olivia": ("liv", "livvy", "livia"),
    "pamela": ("pam",),
    "patricia": ("pat", "patty", "trish", "tricia", "patsy"),
    "patrick": ("pat", "paddy", "rick"),
    "peter": ("pete",),
    "philip": ("phil", "phillip"),
    "raymond": ("ray",),
    "rebecca": ("becky", "becca", "beck"),
    "richard": ("rick", "ricky", "rich", "richie", "dick"),
    "robert": ("bob", "bobby", "rob", "robbie", "bert"),
    "ronald": ("ron", "ronnie", "ronny"),
    "samantha": ("sam", "sammy", "sammie"),
    "samuel": ("sam", "sammy"),
    "sandra": ("sandy",),
    "sebastian": ("seb", "bastian"),
    "sophia": ("sophie", "sofia"),
    "stephanie": ("steph", "stef"),
    "stephen": ("steve", "stevie", "steven"),
    "steven": ("steve", "stevie", "stephen"),
    "susan": ("sue", "susie", "suzy"),
    "teresa": ("terry", "terri", "tess", "tessa", "theresa"),
    "theodore": ("ted", "teddy", "theo"),
    "theresa": ("terri", "terry", "tess", "tessa", "teresa"),
    "thomas": ("tom", "tommy"),
    "timothy": ("tim", "timmy"),
    "tobias": ("toby",),
    "valerie": ("val",),
    "veronica": ("ronnie", "vera", "nica"),
    "victoria": ("vicky", "vicki", "tori", "vic"),
    "vincent": ("vince", "vinny", "vin"),
    "virginia": ("ginny", "ginger"),
    "walter": ("walt", "wally"),
    "wesley": ("wes",),
    "william": ("bill", "billy", "will", "willy", "willie", "liam"),
    "zachary": ("zach", "zack", "zac"),
}


def _formal_by_name() -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for formal, short_forms in _NICKNAMES.items():
        found.setdefault(formal, set()).add(formal)
        for short in short_forms:
            found.setdefault(short, set()).add(formal)
    return {name: frozenset(formals) for name, formals in found.items()}


_FORMAL = _formal_by_name()


def _groups() -> dict[str, str]:
    """Union-find over formal names that share a short form; the group key is its smallest name."""
    parent: dict[str, str] = {f: f for f in _NICKNAMES}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for formals in _FORMAL.values():
        ordered = sorted(formals)
        for other in ordered[1:]:
            a, b = find(ordered[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {name: find(sorted(formals)[0]) for name, formals in _FORMAL.items()}


_GROUP = _groups()


@cache
def formal_names(first_name: str) -> tuple[str, ...]:
    """The formal names a (normalised, lower-case) first name may stand for, itself included."""
    return tuple(sorted(_FORMAL.get(first_name, frozenset()) | {first_name}))


def name_group(first_name: str) -> str:
    """A blocking key shared by every name that is nickname-equivalent to `first_name`."""
    return _GROUP.get(first_name, first_name)


def _members() -> dict[str, frozenset[str]]:
    members: dict[str, set[str]] = {}
    for name, group in _GROUP.items():
        members.setdefault(group, set()).add(name)
    return {group: frozenset(names) for group, names in members.items()}


_MEMBERS = _members()


def names_in_group(group: str) -> frozenset[str]:
    """Every name (formal or short) whose blocking key is `group`; the key itself when unknown."""
    return _MEMBERS.get(group, frozenset({group}))
