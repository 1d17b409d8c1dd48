"""Name and address material for synthetic people.

Common American given names and surnames (public name-frequency lists), combined at random: no
combination describes a real person. Phone numbers use the 555-01xx range reserved for fiction
and e-mail addresses the reserved `example.com` domain (RFC 2606).
"""

from __future__ import annotations

# fmt: off

MALE_GIVEN: tuple[str, ...] = (
    "James", "Michael", "Robert", "John", "David", "William", "Richard", "Joseph", "Thomas",
    "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Andrew",
    "Paul", "Joshua", "Kenneth", "Kevin", "Brian", "Timothy", "Ronald", "Jason", "George", "Edward",
    "Jeffrey", "Ryan", "Jacob", "Nicholas", "Gary", "Eric", "Jonathan", "Stephen", "Larry", "Justin",
    "Scott", "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank", "Raymond",
    "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Jose", "Adam", "Nathan", "Henry", "Zachary",
    "Douglas", "Peter", "Kyle", "Noah", "Ethan", "Jeremy", "Christian", "Walter", "Keith", "Austin",
    "Roger", "Terry", "Sean", "Gerald", "Carl", "Dylan", "Harold", "Jordan", "Jesse", "Bryan",
    "Lawrence", "Arthur", "Gabriel", "Bruce", "Logan", "Billy", "Joe", "Alan", "Juan", "Elijah",
    "Willie", "Albert", "Wayne", "Randy", "Mason", "Vincent", "Liam", "Roy", "Bobby", "Caleb",
    "Bradley", "Russell", "Lucas", "Marcus", "Luis", "Carlos", "Miguel", "Andre", "Darnell", "Malik",
    "Terrell", "Hiroshi", "Minh", "Wei", "Rafael", "Javier", "DeShawn", "Tremaine",
)

FEMALE_GIVEN: tuple[str, ...] = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Karen",
    "Sarah", "Lisa", "Nancy", "Sandra", "Betty", "Ashley", "Emily", "Kimberly", "Margaret", "Donna",
    "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura",
    "Cynthia", "Amy", "Kathleen", "Angela", "Dorothy", "Shirley", "Emma", "Brenda", "Nicole", "Pamela",
    "Samantha", "Anna", "Katherine", "Christine", "Debra", "Rachel", "Olivia", "Carolyn", "Maria",
    "Janet", "Heather", "Diane", "Catherine", "Julie", "Victoria", "Helen", "Joyce", "Lauren", "Kelly",
    "Christina", "Joan", "Judith", "Ruth", "Hannah", "Evelyn", "Andrea", "Virginia", "Megan", "Cheryl",
    "Jacqueline", "Madison", "Sophia", "Abigail", "Teresa", "Isabella", "Sara", "Janice", "Martha",
    "Gloria", "Kathryn", "Ann", "Charlotte", "Judy", "Amber", "Julia", "Grace", "Denise", "Danielle",
    "Natalie", "Alice", "Marilyn", "Diana", "Beverly", "Jean", "Brittany", "Theresa", "Frances",
    "Kayla", "Alexis", "Tiffany", "Lori", "Kathy", "Tamika", "Keisha", "Latoya", "Guadalupe", "Rosa",
    "Yesenia", "Mei", "Linh", "Aiko", "Priya", "Imani",
)

SURNAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
    "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards",
    "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez",
    "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox",
    "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza",
    "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman",
    "Butler", "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan",
    "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West",
    "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens",
    "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez", "McDonald", "Woods",
    "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb", "Tucker", "Guzman",
    "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon", "Mendez", "Silva", "Shaw",
    "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black",
    "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills", "Meyer", "Rice",
    "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver", "Ryan",
    "Gardner", "Payne", "Grant", "Dunn", "Kelley", "Spencer", "Hawkins", "Arnold", "Pierce", "Vazquez",
    "Hansen", "Peters", "Santos", "Hart", "Bradley", "Knight", "Elliott", "Cunningham", "Duncan",
    "Armstrong", "Hudson", "Carroll", "Lane", "Riley", "Andrews", "Alvarado", "Ray", "Delgado", "Berry",
    "Perkins", "Hoffman", "Johnston", "Matthews", "Pena", "Richards", "Contreras", "Willis",
    "Carpenter", "Lawrence", "Sandoval", "Okafor", "Yamamoto", "Kowalski", "Nakamura", "Begay",
)

# Common English nicknames for given names in the lists above (a registration clerk writes
# "Bill" where DEERS has "William"). Only the generator uses this list: the patient index keeps
# its own, so its accuracy is not measured against the very list that made the duplicates.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Billy"), "Robert": ("Bob", "Rob", "Bobby"), "Richard": ("Rick", "Dick",
    "Rich"), "James": ("Jim", "Jimmy"), "John": ("Jack", "Johnny"), "Michael": ("Mike",), "Joseph":
    ("Joe", "Joey"), "Thomas": ("Tom", "Tommy"), "Christopher": ("Chris",), "Charles": ("Chuck",
    "Charlie"), "Daniel": ("Dan", "Danny"), "Matthew": ("Matt",), "Anthony": ("Tony",), "Donald":
    ("Don",), "Steven": ("Steve",), "Andrew": ("Andy", "Drew"), "Joshua": ("Josh",), "Kenneth": ("Ken",
    "Kenny"), "Timothy": ("Tim",), "Ronald": ("Ron",), "Edward": ("Ed", "Eddie", "Ted"), "Jeffrey":
    ("Jeff",), "Jacob": ("Jake",), "Nicholas": ("Nick",), "Jonathan": ("Jon",), "Stephen": ("Steve",),
    "Benjamin": ("Ben",), "Samuel": ("Sam",), "Gregory": ("Greg",), "Alexander": ("Alex",), "Patrick":
    ("Pat",), "Raymond": ("Ray",), "Zachary": ("Zach",), "Douglas": ("Doug",), "Peter": ("Pete",),
    "Gerald": ("Jerry",), "Lawrence": ("Larry",), "Gabriel": ("Gabe",), "Bradley": ("Brad",), "Vincent":
    ("Vince",), "Albert": ("Al",), "Nathan": ("Nate",), "Elizabeth": ("Liz", "Beth", "Betsy"),
    "Patricia": ("Pat", "Patty", "Trish"), "Jennifer": ("Jen", "Jenny"), "Margaret": ("Maggie",
    "Peggy"), "Katherine": ("Kate", "Katie"), "Kathleen": ("Kathy",), "Catherine": ("Cathy", "Kate"),
    "Rebecca": ("Becky",), "Deborah": ("Debbie", "Deb"), "Christine": ("Chris",), "Christina":
    ("Tina",), "Samantha": ("Sam",), "Stephanie": ("Steph",), "Victoria": ("Vicky", "Tori"),
    "Jacqueline": ("Jackie",), "Abigail": ("Abby",), "Pamela": ("Pam",), "Cynthia": ("Cindy",), "Susan":
    ("Sue", "Susie"), "Kimberly": ("Kim",), "Melissa": ("Missy",), "Amanda": ("Mandy",), "Judith":
    ("Judy",), "Dorothy": ("Dot",), "Theresa": ("Terri",), "Alexandra": ("Alex",), "Alexis": ("Lexi",),
    "Madison": ("Maddie",), "Isabella": ("Bella",), "Danielle": ("Dani",), "Natalie": ("Nat",),
    "Andrea": ("Andi",), "Olivia": ("Liv",), "Virginia": ("Ginny",),
}

STREET_NAMES: tuple[str, ...] = (
    "Oak", "Maple", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset", "Ridge",
    "Meadow", "Forest", "Liberty", "Eagle", "Patriot", "Sentry", "Bastion", "Heritage", "Magnolia",
    "Willow", "Highland", "River", "Spring", "Valley", "Chestnut", "Juniper", "Aspen",
)
STREET_SUFFIXES: tuple[str, ...] = (
    "St", "Ave", "Dr", "Ln", "Ct", "Way", "Blvd", "Loop", "Pl",
)

# Area codes are drawn at random; the 555-0100..0199 exchange is reserved for fictional use.
AREA_CODES: tuple[str, ...] = (
    "210", "254", "910", "757", "619", "253", "719", "706", "931", "850", "907", "808", "702", "571",
    "843", "912", "520", "505", "915", "316", "785", "405", "318", "334", "601",
)
# fmt: on
